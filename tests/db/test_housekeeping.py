"""Archived experiments in the store's lists: what each list leaves out, counts and pages that stay
exact, and the job lists' fast path while nothing is archived."""

from __future__ import annotations

import sqlite3
import time

import pytest

from db.experiments import experiment_rows
from db.housekeeping import UnknownExperiment, archive
from db.queue import IllegalTransition, JobDraft, enqueue, request_cancel
from db.reads import list_jobs, offset_of, page_jobs
from db.session import Store


def _draft(exp: str, name: str) -> JobDraft:
    return JobDraft(experiment=exp, name=name, kind="command", spec={"kind": "command", "command": ["true"]})


@pytest.fixture
def store(tmp_path):  # noqa: ANN001, ANN201
    s = Store(tmp_path / "home")
    with s.write() as w:  # 30 experiments of 2 jobs, the newest last; all cancelled (finished)
        ids = enqueue(w, [_draft(f"exp{i:02d}", f"j{k}") for i in range(30) for k in range(2)])
        for i in ids:
            request_cancel(w, i)
    yield s
    s.dispose()


def test_archived_experiments_leave_every_default_list_and_pages_stay_exact(store) -> None:  # noqa: ANN001
    with store.write() as s:
        assert archive(s, [f"exp{i:02d}" for i in range(0, 30, 3)]) == [(f"exp{i:02d}", True) for i in range(0, 30, 3)]
    with store.read() as s:
        rows, total = experiment_rows(s, limit=7)
        assert total == 20 and [r.name for r in rows] == ["exp29", "exp28", "exp26", "exp25", "exp23", "exp22", "exp20"]
        second, _ = experiment_rows(s, offset=7, limit=7)
        assert [r.name for r in second][:2] == ["exp19", "exp17"]
        only, n = experiment_rows(s, archived=True)
        assert n == 10 and {r.name for r in only} == {f"exp{i:02d}" for i in range(0, 30, 3)}
        assert all(r.archived_at is not None for r in only)
        assert experiment_rows(s, archived=None)[1] == 30
        assert experiment_rows(s, text="exp0")[1] == 6  # a filter hides them too: exp01 02 04 05 07 08
        con = s.connection().connection.driver_connection
        jobs, count = page_jobs(con, hide_archived=True, limit=5)
        assert count == 40 and jobs[0].experiment == "exp29"
        assert page_jobs(con, limit=5)[1] == 60
        assert len(page_jobs(con, experiment="exp27", hide_archived=True)[0]) == 2  # named: shown
        assert len(list_jobs(con, hide_archived=True)) == 40
        newest_of_exp26 = max(r.id for r in list_jobs(con, experiment="exp26"))
        assert offset_of(con, newest_of_exp26, "newest", 5, hide_archived=True) == 0  # exp27's jobs do not count


def test_archive_refuses_unknown_and_live_and_writes_nothing(store) -> None:  # noqa: ANN001
    with store.write() as s:
        enqueue(s, [_draft("exp05", "live")])
    with pytest.raises(UnknownExperiment, match="'nope': no such experiment"), store.write() as s:
        archive(s, ["exp01", "nope"])
    with pytest.raises(IllegalTransition, match="'exp05': 1 job still live \\(queued 61\\)"), store.write() as s:
        archive(s, ["exp01", "exp05"])
    with store.read() as s:
        assert experiment_rows(s, archived=True)[1] == 0
        assert archive(s, ["exp05"], restore=True) == [("exp05", False)]


def test_queueing_into_an_archived_experiment_restores_it(store) -> None:  # noqa: ANN001
    with store.write() as s:
        archive(s, ["exp03"], now=time.time())
    with store.write() as s:
        enqueue(s, [_draft("exp03", "again")])
    with store.read() as s:
        assert experiment_rows(s, archived=True)[1] == 0


def test_the_lists_ask_only_an_index_while_nothing_is_archived(store) -> None:  # noqa: ANN001
    con = sqlite3.connect(store.path)
    plan = " ".join(r[-1] for r in con.execute("EXPLAIN QUERY PLAN SELECT 1 FROM experiment WHERE archived_at IS NOT NULL LIMIT 1"))
    con.close()
    assert "ix_experiment_archived" in plan


def test_only_run_folders_of_the_home_are_ever_candidates_for_removal(store, tmp_path) -> None:  # noqa: ANN001
    from sqlalchemy import text

    from db.home import set_runs_dir
    from db.housekeeping import job_folders

    home = store.home
    with store.write() as s:
        s.execute(text(
            "UPDATE job SET run_dir = CASE id WHEN 1 THEN :inside WHEN 2 THEN :outside WHEN 3 THEN :wrong ELSE '' END"),
            {"inside": str(home / "runs" / "1"), "outside": str(tmp_path / "elsewhere" / "2"),
             "wrong": str(home / "runs" / "4")})
    scratch = set_runs_dir(home, tmp_path / "scratch")  # run folders moved to shared storage since
    with store.read() as s:
        found = job_folders(s, home, [1, 2, 3])
    assert found[1] == [scratch / "1", home / "runs" / "1"]  # where it is now, and where it was recorded
    assert found[2] == [scratch / "2"]  # a recorded folder outside the home's runs is never touched
    assert found[3] == [scratch / "3"]  # nor one named for another job
