"""Opening the store: one SQLAlchemy engine per process, tuned for many readers and a few writers.

Every connection gets WAL, `synchronous=NORMAL`, a busy timeout and foreign keys. Writes go through
`Store.write()`, which opens its transaction with `BEGIN IMMEDIATE`: a deferred transaction that
reads and then writes fails at once with "database is locked" when another writer got there first,
and the busy timeout cannot help it. Reads go through `Store.read()` with a plain deferred BEGIN,
closed as soon as the block ends, so an idle TUI never pins the WAL.

pysqlite's own implicit BEGIN is switched off (isolation_level None) and labdeck emits its own, as in
SQLAlchemy's documented "Serializable isolation / Savepoints / Transactional DDL" recipe; this also
works on Python 3.10, which lacks sqlite3's `autocommit` attribute.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from db import migrations
from db.home import db_path, ensure_home, worker_lock_schema

BUSY_TIMEOUT_MS = 10_000


def _configure(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA temp_store = MEMORY")
    cur.close()


def _make_engine(path: Path, *, immediate: bool) -> Engine:
    # NullPool: a connection lives only as long as its session, so no process ever holds a
    # connection across fork, and no reader keeps a snapshot open while idle.
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)
    event.listen(engine, "connect", _configure)
    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001 - SQLAlchemy's Connection
        conn.exec_driver_sql(begin)

    return engine


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does, so it is never world-readable."""
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    os.chmod(path, 0o600)


class Store:
    """The handle every process uses: `with store.write() as s:` / `with store.read() as s:`."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = ensure_home(home)
        self.path = db_path(self.home)
        _create_private(self.path)
        raw = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            _configure(raw, None)
            version = migrations.current_version(raw)
            if 0 < version < migrations.SCHEMA_VERSION:
                held, schema = worker_lock_schema(self.home)
                if held and schema != migrations.SCHEMA_VERSION:
                    raise migrations.SchemaBusy(
                        f"{self.path}: a worker of another labdeck version is running; stop it "
                        f"(labdeck worker stop) so this labdeck can upgrade the store")
                migrations.backup(raw, self.path, version)
            migrations.migrate(raw, str(self.path))
        finally:
            raw.close()
        self.write_engine = _make_engine(self.path, immediate=True)
        self.read_engine = _make_engine(self.path, immediate=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, started with BEGIN IMMEDIATE; commits on success."""
        with Session(self.write_engine, expire_on_commit=False, info={"home": self.home}) as session:
            with session.begin():
                yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A short read transaction; nothing it does is committed."""
        with Session(self.read_engine, expire_on_commit=False, info={"home": self.home}) as session:
            try:
                yield session
            finally:
                session.rollback()

    def checkpoint(self) -> None:
        """Fold the WAL back into the database (the worker calls this when the WAL grows)."""
        raw = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            _configure(raw, None)
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()

    def checkpoint_if_over(self, limit_mb: float) -> float | None:
        """Checkpoint when the WAL is larger than `limit_mb`; returns the size it had then, else None."""
        try:
            size_mb = Path(f"{self.path}-wal").stat().st_size / 2**20
        except OSError:
            return None
        if size_mb <= limit_mb:
            return None
        self.checkpoint()
        return size_mb

    def dispose(self) -> None:
        self.write_engine.dispose()
        self.read_engine.dispose()


def open_store(home: Path | str | None = None) -> Store:
    return Store(home)
