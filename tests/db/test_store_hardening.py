"""The store under hostile input and careless use: ids never reused, secrets never shown, no
self-dependency, one retry at a time, a home that is someone else's refused, a migration that
backs up first and never runs under an older worker."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3

import pytest

from db import migrations
from db.export import export_rows
from db.home import HomeError, ensure_home
from db.models import Job, JobStatus
from db.queries import job_detail
from db.queue import IllegalTransition, JobDraft, UnknownJob, enqueue, retry
from db.redact import REDACTED, redact
from db.removal import delete_runs
from db.session import Store, open_store

S = JobStatus


def _draft(name: str = "j", **kw) -> JobDraft:
    spec = kw.pop("spec", {"kind": "command", "command": ["true"]})
    return JobDraft(experiment="exp", name=name, kind="command", spec=spec, **kw)


def _finish(store: Store, job_id: int, status: JobStatus) -> None:
    with store.write() as s:
        s.get(Job, job_id).status = status


def test_ids_are_never_reused_after_rm(store) -> None:
    with store.write() as s:
        a, b = enqueue(s, [_draft("a"), _draft("b")])
    _finish(store, b, S.succeeded)
    (store.home / "runs" / str(b)).mkdir()
    assert delete_runs(store, [b]) == [b]
    with store.write() as s:
        (c,) = enqueue(s, [_draft("c")])
    assert c > b, "the deleted newest job's id must not come back"
    assert not list((store.home / "runs").glob(".deleted-*"))


def test_rm_finishes_a_folder_a_job_made_read_only_and_earlier_leftovers(store) -> None:
    with store.write() as s:
        (a,) = enqueue(s, [_draft("a")])
    _finish(store, a, S.failed)
    ro = store.home / "runs" / str(a) / "outputs" / "locked"
    ro.mkdir(parents=True)
    (ro / "f").write_text("x")
    ro.chmod(0o500)
    stale = store.home / "runs" / ".deleted-99"  # an rm killed half-way, long ago
    (stale / "x").mkdir(parents=True)
    delete_runs(store, [a])
    assert sorted(p.name for p in (store.home / "runs").iterdir()) == []


def test_a_job_cannot_wait_for_itself(store) -> None:
    with store.write() as s:
        (first,) = enqueue(s, [_draft("a")])
    with pytest.raises(UnknownJob, match="cannot wait for itself"):
        with store.write() as s:
            enqueue(s, [_draft("b", depends_on_ids=(first + 1,))])
    with store.read() as s:
        assert s.get(Job, first + 1) is None, "nothing half-written"


def test_one_live_retry_at_a_time(store) -> None:
    with store.write() as s:
        (a,) = enqueue(s, [_draft("a")])
    _finish(store, a, S.failed)
    with store.write() as s:
        first = retry(s, a)
    with pytest.raises(IllegalTransition, match=f"job {first}, is still queued"):
        with store.write() as s:
            retry(s, a)
    _finish(store, first, S.failed)
    with store.write() as s:  # once it ended, another attempt is allowed
        assert retry(s, a) > first


def test_secret_env_values_are_redacted_in_show_and_export(store) -> None:
    spec = {"kind": "command", "command": ["true"],
            "env": {"OPENAI_API_KEY": "sk-123", "HF_TOKEN": "hf_x", "DB_PASSWORD": "pw", "SEED": "7"}}
    with store.write() as s:
        (a,) = enqueue(s, [_draft("a", spec=spec)])
    with store.read() as s:
        shown = job_detail(s, a).spec["env"]
        exported = json.loads(export_rows(s, "exp")[0]["spec"])["env"]
        stored = json.loads(s.get(Job, a).spec)["env"]
    for env in (shown, exported):
        assert env == {"OPENAI_API_KEY": REDACTED, "HF_TOKEN": REDACTED, "DB_PASSWORD": REDACTED, "SEED": "7"}
    assert stored["OPENAI_API_KEY"] == "sk-123", "the job itself still gets it"
    # pipeline stages and names of variables (not values) are left alone
    assert redact({"stages": [{"env": {"my_secret": "s"}}], "api_key_env": "OPENAI_API_KEY"}) == {
        "stages": [{"env": {"my_secret": REDACTED}}], "api_key_env": "OPENAI_API_KEY"}


def test_someone_elses_links_in_a_home_are_refused(tmp_path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "runs").symlink_to(elsewhere)
    with pytest.raises(HomeError, match="runs: is a symbolic link"):
        ensure_home(home)
    (home / "runs").unlink()
    (home / "labdeck.db").symlink_to(tmp_path / "other.db")
    with pytest.raises(HomeError, match="labdeck.db: is a symbolic link"):
        ensure_home(home)


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a folder to another user")
def test_a_home_owned_by_another_user_is_refused(tmp_path) -> None:
    home = tmp_path / "theirs"
    home.mkdir()
    os.chown(home, 4242, 4242)
    with pytest.raises(HomeError, match="belongs to user id 4242"):
        ensure_home(home)


def _old_home(tmp_path, name: str = "old"):
    h = tmp_path / name
    h.mkdir()
    conn = sqlite3.connect(h / "labdeck.db", isolation_level=None)
    migrations.migrate(conn, target=2)
    conn.execute("INSERT INTO experiment (id, name, created_at) VALUES (1, 'e', 1.0)")
    conn.execute("INSERT INTO job (id, experiment_id, name, kind, spec, status, queued_at) "
                 "VALUES (5, 1, 'j', 'command', '{}', 'succeeded', 2.0)")
    conn.execute("INSERT INTO metric (job_id, name, step, value, time) VALUES (5, 'loss', 1, 0.5, 3.0)")
    conn.close()
    return h


def test_migration_backs_up_first_and_keeps_rows(tmp_path) -> None:
    h = _old_home(tmp_path)
    store = open_store(h)
    backup = h / "labdeck.db.v2.bak"
    assert backup.exists() and (backup.stat().st_mode & 0o777) == 0o600
    old = sqlite3.connect(backup)
    assert old.execute("PRAGMA user_version").fetchone()[0] == 2
    assert old.execute("SELECT count(*) FROM metric").fetchone()[0] == 1
    with store.read() as s:
        assert s.get(Job, 5).name == "j"
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert "AUTOINCREMENT" in raw.execute("SELECT sql FROM sqlite_master WHERE name = 'job'").fetchone()[0]
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []


def test_no_migration_under_a_running_worker_of_another_version(tmp_path) -> None:
    h = _old_home(tmp_path)
    fd = os.open(h / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"12345\n")  # an older worker: it wrote no schema version
    fcntl.flock(fd, fcntl.LOCK_EX)  # held by this process, as a living worker holds it
    try:
        with pytest.raises(migrations.SchemaBusy, match="worker of another labdeck version is running"):
            open_store(h)
        conn = sqlite3.connect(h / "labdeck.db")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2, "untouched"
    finally:
        os.close(fd)
    assert open_store(h) is not None  # once it stopped, the upgrade goes ahead
