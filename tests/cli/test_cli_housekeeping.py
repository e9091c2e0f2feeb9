"""`labdeck archive`/`unarchive`, `rm -e`, `du --runs` and `prune` on a home with real rows and real
run folders (tui_seed_housekeeping.py): what each removes, what it never touches, and its refusals."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tui_seed_housekeeping import CHECKPOINT_BYTES, MODEL_BYTES, run_bytes, seed_housekeeping

from cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *args: str) -> tuple[int, str, str]:  # noqa: ANN001
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def hk(home: Path) -> dict[str, list[int]]:
    from db.session import Store

    store = Store(home)
    ids = seed_housekeeping(store)
    store.dispose()
    return ids


def db_rows(home: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(home / "labdeck.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_the_real_entry_refuses_with_one_line_and_exit_2(home: Path, hk) -> None:  # noqa: ANN001
    env = dict(os.environ, LABDECK_HOME=str(home), LABDECK_NO_AUTOSTART="1")
    for argv, says in ((["archive", "nope"], "experiment 'nope': no such experiment"),
                       (["archive", "busy"], "experiment 'busy': 2 jobs still live (running 6, queued 7)"),
                       (["rm", "-e", "busy", "--yes"], "before deleting the experiment"),

                       (["prune", "lr-sweep", "-n", "1", "-m", "grad_norm"], "--mode: say whether")):
        p = subprocess.run([sys.executable, "-m", "cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        assert p.returncode == 2 and says in p.stderr and p.stderr.count("\n") == 1, (argv, p.stderr)
    assert db_rows(home, "SELECT count(*) FROM job") == [(7,)]


@pytest.mark.parametrize("argv", [["rm", "-e", "nope", "--yes"], ["prune", "nope", "-n", "1", "-m", "eval_loss"],
                                  ["du", "nope", "--runs"], ["unarchive", "lr-sweep", "nope"]])
def test_an_unknown_experiment_is_one_line_and_exit_2(home: Path, hk, capsys, argv) -> None:  # noqa: ANN001
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err == "labdeck: experiment 'nope': no such experiment\n"


def test_archive_hides_from_lists_keeps_everything_and_restores(home: Path, hk, capsys) -> None:  # noqa: ANN001
    before = sorted(p.relative_to(home) for p in (home / "runs").rglob("*"))
    code, out, _ = run(capsys, "archive", "lr-sweep", "--json")
    assert code == 0 and json.loads(out) == [{"experiment": "lr-sweep", "archived": True, "changed": True}]
    assert [r["name"] for r in json.loads(run(capsys, "experiments", "--json")[1])] == ["busy"]
    archived = json.loads(run(capsys, "experiments", "--archived", "--json")[1])
    assert [r["name"] for r in archived] == ["lr-sweep"] and archived[0]["archived_at"] > 0
    assert {r["name"] for r in json.loads(run(capsys, "experiments", "--all", "--json")[1])} == {"busy", "lr-sweep"}
    assert {r["id"] for r in json.loads(run(capsys, "ls", "--json")[1])} == set(hk["busy"])
    assert len(json.loads(run(capsys, "ls", "--all", "--json")[1])) == 7
    assert run(capsys, "ls")[1].rstrip().endswith("2 jobs · archived experiments hidden (-a shows them)")
    assert len(json.loads(run(capsys, "ls", "-e", "lr-sweep", "--json")[1])) == 5  # naming it shows it
    assert sorted(p.relative_to(home) for p in (home / "runs").rglob("*")) == before  # nothing on disk changed
    assert run(capsys, "archive", "lr-sweep")[1] == "lr-sweep: already archived\n"
    code, out, _ = run(capsys, "unarchive", "lr-sweep")
    assert code == 0 and out == "restored lr-sweep\n"
    assert len(json.loads(run(capsys, "ls", "--json")[1])) == 7


def test_new_work_in_an_archived_experiment_brings_it_back(home: Path, hk, capsys) -> None:  # noqa: ANN001
    assert run(capsys, "archive", "lr-sweep")[0] == 0
    code, out, _ = run(capsys, "retry", str(hk["broken"][0]), "--json")
    assert code == 0
    assert {r["name"] for r in json.loads(run(capsys, "experiments", "--json")[1])} == {"busy", "lr-sweep"}


def test_rm_experiment_deletes_rows_and_run_folders_but_never_follows_a_link_out(home: Path, hk, capsys,  # noqa: ANN001
                                                                                   tmp_path: Path) -> None:
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    job = hk["sweep"][0]
    link = home / "runs" / str(job) / "outputs" / "elsewhere"
    link.symlink_to(outside)  # a link inside a run folder: counted as a link, never followed
    link_bytes = os.lstat(link).st_size
    code, _, err = run(capsys, "rm", "-e", "lr-sweep")  # no terminal
    assert code == 2 and "--yes" in err and "5 job(s)" in err
    code, out, _ = run(capsys, "rm", "-e", "lr-sweep", "--yes", "--json")
    assert code == 0
    done = json.loads(out)
    assert done["deleted"] == hk["sweep"] + hk["broken"]
    assert done["bytes"] == sum(run_bytes(i) for i in range(4)) + 100 + link_bytes
    assert (outside / "keep.txt").read_text() == "mine"
    assert not any((home / "runs" / str(i)).exists() for i in hk["sweep"] + hk["broken"])
    assert not list((home / "runs").glob(".deleted-*"))
    assert db_rows(home, "SELECT name FROM experiment") == [("busy",)]
    for table in ("metric", "artifact"):
        assert db_rows(home, f"SELECT count(*) FROM {table}") == [(0,)]


def test_rm_experiment_that_fails_in_the_database_leaves_every_folder(home: Path, hk, capsys) -> None:  # noqa: ANN001
    con = sqlite3.connect(home / "labdeck.db")
    con.execute("CREATE TRIGGER refuse BEFORE DELETE ON job BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    con.commit()
    con.close()
    from client import Client

    with pytest.raises(Exception, match="disk full"):
        Client(home).delete_experiment("lr-sweep")
    assert all((home / "runs" / str(i) / "outputs" / "model").is_dir() for i in hk["sweep"])
    assert not list((home / "runs").glob(".deleted-*"))
    assert db_rows(home, "SELECT count(*) FROM job") == [(7,)]


def test_du_runs_lists_each_run_folder(home: Path, hk, capsys) -> None:  # noqa: ANN001
    code, out, _ = run(capsys, "du", "lr-sweep", "--runs", "--json")
    got = json.loads(out)["lr-sweep"]
    assert code == 0 and got["bytes"] == sum(run_bytes(i) for i in range(4)) + 100
    assert {r["id"]: r["bytes"] for r in got["runs"]} == {**{j: run_bytes(i) for i, j in enumerate(hk["sweep"])},
                                                         hk["broken"][0]: 100}
    code, out, _ = run(capsys, "du", "lr-sweep", "--runs")
    assert code == 0 and f"job {hk['sweep'][3]}" in out.splitlines()[1]  # the largest run first


def test_prune_keeps_the_best_by_final_value_and_marks_the_rest(home: Path, hk, capsys) -> None:  # noqa: ANN001
    sweep = hk["sweep"]  # final eval_loss 0.9, 0.5, 0.7, 1.2: the best two are sweep[1] and sweep[2]
    code, out, _ = run(capsys, "prune", "lr-sweep", "--keep-best", "2", "--metric", "eval_loss", "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["mode"] == "min" and plan["dry_run"] is True
    assert [i["id"] for i in plan["keep"]] == [sweep[1], sweep[2]]
    assert [i["id"] for i in plan["prune"]] == [sweep[0], sweep[3]]
    assert plan["bytes"] == MODEL_BYTES[0] + MODEL_BYTES[3] + 2 * CHECKPOINT_BYTES
    assert (home / "runs" / str(sweep[0]) / "outputs" / "model").is_dir(), "a dry run deletes nothing"
    code, _, err = run(capsys, "prune", "lr-sweep", "-n", "2", "-m", "eval_loss")
    assert code == 2 and "--yes" in err
    code, out, _ = run(capsys, "prune", "lr-sweep", "-n", "2", "-m", "eval_loss", "--yes")
    assert code == 0 and "freed 13.7 KiB" in out
    for j in (sweep[0], sweep[3]):
        assert not (home / "runs" / str(j) / "outputs" / "model").exists()
        assert not (home / "runs" / str(j) / "checkpoints").exists()
        assert (home / "runs" / str(j) / "log.txt").is_file()
    for j in (sweep[1], sweep[2]):
        assert (home / "runs" / str(j) / "outputs" / "model" / "adapter_model.safetensors").is_file()
        assert (home / "runs" / str(j) / "checkpoints").is_dir()
    assert db_rows(home, "SELECT count(*) FROM metric") == [(8,)]  # rows and metrics stay
    shown = json.loads(run(capsys, "show", str(sweep[0]), "--json")[1])
    assert "(pruned: weights deleted" in run(capsys, "show", str(sweep[0]))[1]
    assert shown["status"] == "succeeded" and shown["artifacts"][0]["meta"]["pruned_bytes"] == MODEL_BYTES[0] + CHECKPOINT_BYTES
    again = json.loads(run(capsys, "prune", "lr-sweep", "-n", "2", "-m", "eval_loss", "--yes", "--json")[1])
    assert again["prune"] == [] and all("pruned before" in i["note"] for i in again["skipped"])


def test_a_pruned_model_is_rebuilt_by_a_retry_and_its_readers_retry_after_it(home: Path, hk, capsys) -> None:  # noqa: ANN001
    """A failed job that read a pruned fine-tune cannot be retried into a sure failure: labdeck says to
    retry the fine-tune (which rebuilds its weights), and the reader's retry then reads the rebuild."""
    from db.session import Store
    from db.stagerefs import targets

    sweep, (reader,) = hk["sweep"], hk["broken"]
    con = sqlite3.connect(home / "labdeck.db")
    con.execute("INSERT INTO jobdependency (job_id, depends_on_id) VALUES (?, ?)", (reader, sweep[0]))
    con.commit()
    con.close()
    assert run(capsys, "prune", "lr-sweep", "-n", "2", "-m", "eval_loss", "--yes")[0] == 0
    code, out, err = run(capsys, "retry", str(reader))
    assert code == 2 and out == ""
    assert err == (f"labdeck: job {reader}: it reads job {sweep[0]}'s model, which `labdeck prune` deleted; "
                   f"retry job {sweep[0]} first to rebuild it\n")
    code, _, err = run(capsys, "retry", str(sweep[1]))  # kept weights: a succeeded job is still final
    assert code == 2 and "a succeeded job cannot be retried" in err
    code, out, _ = run(capsys, "retry", str(sweep[0]), "--json")
    assert code == 0
    rebuild = json.loads(out)[0]["new"]
    code, out, _ = run(capsys, "retry", str(reader), "--json")
    assert code == 0
    again = json.loads(out)[0]["new"]
    assert db_rows(home, f"SELECT depends_on_id FROM jobdependency WHERE job_id = {again}") == [(rebuild,)]
    store = Store(home)
    with store.read() as s:  # the stored `${job:S.output}` reference now means the rebuild's folder
        assert targets(s, again, {sweep[0]})[sweep[0]][0] == rebuild
    store.dispose()


def test_prune_leaves_models_a_live_job_reads_and_paths_outside_the_run_folder(home: Path, hk, capsys,  # noqa: ANN001
                                                                              tmp_path: Path) -> None:
    sweep = hk["sweep"]
    outside = tmp_path / "shared-model"
    outside.mkdir()
    (outside / "weights.safetensors").write_bytes(b"w" * 10)
    con = sqlite3.connect(home / "labdeck.db")
    con.execute("INSERT INTO jobdependency (job_id, depends_on_id) VALUES (?, ?)", (hk["busy"][1], sweep[0]))
    con.execute("UPDATE artifact SET path = ? WHERE job_id = ?", (str(outside), sweep[3]))
    con.commit()
    con.close()
    plan = json.loads(run(capsys, "prune", "lr-sweep", "-n", "1", "-m", "eval_loss", "--yes", "--json")[1])
    assert [i["id"] for i in plan["prune"]] == [sweep[2], sweep[3]]
    assert plan["prune"][1]["paths"] == [str(home / "runs" / str(sweep[3]) / "checkpoints")]
    assert "reads its model" in next(i["note"] for i in plan["skipped"] if i["id"] == sweep[0])
    assert (outside / "weights.safetensors").is_file()
    assert (home / "runs" / str(sweep[0]) / "outputs" / "model").is_dir()
