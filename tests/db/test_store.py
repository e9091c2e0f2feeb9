"""The store's file: permissions, pragmas, migrations from older releases, refusal of newer ones."""

from __future__ import annotations

import sqlite3
import stat

import pytest
from sqlmodel import SQLModel

import db.models  # noqa: F401 - registers the tables in SQLModel.metadata
from db import migrations
from db.session import open_store


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_is_0700_and_database_0600(home) -> None:
    store = open_store(home)
    assert _mode(home) == 0o700
    assert _mode(home / "runs") == 0o700
    assert _mode(store.path) == 0o600
    with store.write() as s:  # WAL files appear on first write, with the database's mode
        s.exec(db.models.Setting.__table__.insert().values(key="k", value="v"))
    for suffix in ("-wal", "-shm"):
        p = store.path.with_name(store.path.name + suffix)
        if p.exists():
            assert _mode(p) & 0o077 == 0


def test_existing_loose_home_is_tightened(tmp_path) -> None:
    h = tmp_path / "loose"
    h.mkdir(mode=0o755)
    h.chmod(0o755)
    open_store(h)
    assert _mode(h) == 0o700


def test_connection_pragmas(store) -> None:
    with store.read() as s:
        conn = s.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_schema_matches_the_models(store) -> None:
    """Every column a model declares exists in the migrated database, and no table is missing."""
    conn = sqlite3.connect(store.path)
    for table in SQLModel.metadata.sorted_tables:
        cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table.name})")}
        assert cols == {c.name for c in table.columns}, table.name


def test_version_1_database_migrates_with_rows_intact(tmp_path) -> None:
    h = tmp_path / "old"
    h.mkdir()
    conn = sqlite3.connect(h / "labdeck.db", isolation_level=None)
    migrations.migrate(conn, target=1)
    assert migrations.current_version(conn) == 1
    conn.execute("INSERT INTO experiment (id, name, created_at) VALUES (1, 'old-exp', 1.0)")
    conn.execute(
        "INSERT INTO job (id, experiment_id, name, kind, spec, status, queued_at, finished_at, exit_code) "
        "VALUES (7, 1, 'old-job', 'command', '{\"kind\": \"command\"}', 'succeeded', 2.0, 3.0, 0)"
    )
    conn.executemany("INSERT INTO metric (job_id, name, step, value, time) VALUES (7, 'loss', ?, ?, 4.0)",
                     [(i, 1.0 / (i + 1)) for i in range(100)])
    conn.close()

    store = open_store(h)
    from db.queries import job_detail, metric_series

    with store.read() as s:
        d = job_detail(s, 7)
        series = metric_series(s, 7, "loss")
    assert (d.row.name, d.row.experiment, d.row.status, d.exit_code) == ("old-job", "old-exp", "succeeded", 0)
    assert d.row.params == {}  # the column added in version 2 has its default
    assert len(series) == 100 and series[3] == (3, 0.25)
    raw = sqlite3.connect(store.path)
    assert migrations.current_version(raw) == migrations.SCHEMA_VERSION
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_newer_database_is_refused_untouched(tmp_path) -> None:
    h = tmp_path / "new"
    h.mkdir()
    conn = sqlite3.connect(h / "labdeck.db")
    conn.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(migrations.SchemaTooNew, match="newer than this labdeck"):
        open_store(h)
    conn = sqlite3.connect(h / "labdeck.db")
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
