"""Forward-only schema migrations, as a numbered list of SQL steps.

The database records its schema version in `PRAGMA user_version`. Opening a database runs every
step above that version, each in its own `BEGIN IMMEDIATE` transaction together with the version
bump, so a crash mid-migration leaves the previous version intact. A database newer than this
release is refused instead of being touched.

Why not Alembic: labdeck's schema is a handful of tables on one local file, and a list of steps
keeps the whole history readable in one screen, with no extra tool for a user to run.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

# Each entry upgrades version i to i + 1. Never edit a released step; append a new one.
STEPS: list[list[str]] = [
    # 0 -> 1: the first schema.
    [
        """CREATE TABLE experiment (
            id INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            description VARCHAR NOT NULL DEFAULT '',
            created_at FLOAT NOT NULL)""",
        "CREATE INDEX ix_experiment_name ON experiment (name)",
        """CREATE TABLE job (
            id INTEGER PRIMARY KEY,
            experiment_id INTEGER NOT NULL REFERENCES experiment (id),
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            spec VARCHAR NOT NULL,
            status VARCHAR(11) NOT NULL DEFAULT 'queued',
            priority INTEGER NOT NULL DEFAULT 0,
            gpus_requested INTEGER NOT NULL DEFAULT 0,
            min_free_mem_mb INTEGER NOT NULL DEFAULT 0,
            gpu_mem_mb INTEGER NOT NULL DEFAULT 0,
            allow_foreign BOOLEAN NOT NULL DEFAULT 0,
            time_limit_s FLOAT,
            retry_max INTEGER NOT NULL DEFAULT 0,
            retry_on VARCHAR NOT NULL DEFAULT '[]',
            assigned_gpus VARCHAR NOT NULL DEFAULT '',
            pid INTEGER,
            pid_start_time FLOAT,
            host VARCHAR NOT NULL DEFAULT '',
            run_dir VARCHAR NOT NULL DEFAULT '',
            attempt INTEGER NOT NULL DEFAULT 1,
            parent_id INTEGER REFERENCES job (id),
            cancel_requested BOOLEAN NOT NULL DEFAULT 0,
            queued_at FLOAT NOT NULL,
            started_at FLOAT,
            finished_at FLOAT,
            heartbeat_at FLOAT,
            exit_code INTEGER,
            exit_signal INTEGER,
            failure_reason VARCHAR,
            failure_detail VARCHAR NOT NULL DEFAULT '',
            log_tail VARCHAR NOT NULL DEFAULT '',
            events_offset INTEGER NOT NULL DEFAULT 0,
            progress_done FLOAT,
            progress_total FLOAT,
            eta_s FLOAT)""",
        "CREATE INDEX ix_job_experiment_id ON job (experiment_id)",
        "CREATE INDEX ix_job_kind ON job (kind)",
        "CREATE INDEX ix_job_status ON job (status)",
        """CREATE TABLE jobdependency (
            job_id INTEGER NOT NULL REFERENCES job (id),
            depends_on_id INTEGER NOT NULL REFERENCES job (id),
            PRIMARY KEY (job_id, depends_on_id))""",
        "CREATE INDEX ix_jobdependency_depends_on_id ON jobdependency (depends_on_id)",
        """CREATE TABLE metric (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES job (id),
            name VARCHAR NOT NULL,
            step INTEGER,
            value FLOAT NOT NULL,
            time FLOAT NOT NULL)""",
        "CREATE INDEX ix_metric_job_id ON metric (job_id)",
        """CREATE TABLE artifact (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES job (id),
            kind VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            meta VARCHAR NOT NULL DEFAULT '{}',
            created_at FLOAT NOT NULL)""",
        "CREATE INDEX ix_artifact_job_id ON artifact (job_id)",
        """CREATE TABLE worker (
            id INTEGER PRIMARY KEY,
            host VARCHAR NOT NULL,
            pid INTEGER NOT NULL,
            pid_start_time FLOAT NOT NULL,
            started_at FLOAT NOT NULL,
            heartbeat_at FLOAT NOT NULL,
            stopped_at FLOAT,
            gpus VARCHAR NOT NULL DEFAULT '',
            state VARCHAR NOT NULL DEFAULT 'running')""",
        """CREATE TABLE setting (
            key VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL)""",
    ],
    # 1 -> 2: sweep/pipeline parameters per job (what results pivot over), and the index that
    # answers "latest value of metric M for every job" without scanning all metric rows.
    [
        "ALTER TABLE job ADD COLUMN params VARCHAR NOT NULL DEFAULT '{}'",
        "DROP INDEX ix_metric_job_id",
        "CREATE INDEX ix_metric_job_name_step ON metric (job_id, name, step)",
        "CREATE INDEX ix_metric_name_job ON metric (name, job_id)",
        "CREATE INDEX ix_job_status_priority ON job (status, priority DESC, id)",
    ],
    # 2 -> 3: job ids are never reused (AUTOINCREMENT: after `rm` of the newest job, the next one
    # gets a new id, so a note or a script that names job 12 never meets a different job 12); how
    # the worker's executor finds a job's processes again (opaque: the local executor keeps the
    # launcher's pid, start ticks and boot id); which events file the offset counts in, and what
    # ingestion skipped and why. SQLite cannot add AUTOINCREMENT in place: the table is rebuilt
    # (foreign keys are off for this step, see `migrate`).
    [
        """CREATE TABLE job_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            experiment_id INTEGER NOT NULL REFERENCES experiment (id),
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            spec VARCHAR NOT NULL,
            status VARCHAR(11) NOT NULL DEFAULT 'queued',
            priority INTEGER NOT NULL DEFAULT 0,
            gpus_requested INTEGER NOT NULL DEFAULT 0,
            min_free_mem_mb INTEGER NOT NULL DEFAULT 0,
            gpu_mem_mb INTEGER NOT NULL DEFAULT 0,
            allow_foreign BOOLEAN NOT NULL DEFAULT 0,
            time_limit_s FLOAT,
            retry_max INTEGER NOT NULL DEFAULT 0,
            retry_on VARCHAR NOT NULL DEFAULT '[]',
            assigned_gpus VARCHAR NOT NULL DEFAULT '',
            pid INTEGER,
            pid_start_time FLOAT,
            host VARCHAR NOT NULL DEFAULT '',
            run_dir VARCHAR NOT NULL DEFAULT '',
            attempt INTEGER NOT NULL DEFAULT 1,
            parent_id INTEGER REFERENCES job (id),
            cancel_requested BOOLEAN NOT NULL DEFAULT 0,
            queued_at FLOAT NOT NULL,
            started_at FLOAT,
            finished_at FLOAT,
            heartbeat_at FLOAT,
            exit_code INTEGER,
            exit_signal INTEGER,
            failure_reason VARCHAR,
            failure_detail VARCHAR NOT NULL DEFAULT '',
            log_tail VARCHAR NOT NULL DEFAULT '',
            events_offset INTEGER NOT NULL DEFAULT 0,
            progress_done FLOAT,
            progress_total FLOAT,
            eta_s FLOAT,
            params VARCHAR NOT NULL DEFAULT '{}',
            external_id VARCHAR NOT NULL DEFAULT '',
            events_inode INTEGER NOT NULL DEFAULT 0,
            events_skipped INTEGER NOT NULL DEFAULT 0,
            events_note VARCHAR NOT NULL DEFAULT '')""",
        "INSERT INTO job_new (id, experiment_id, name, kind, spec, status, priority, gpus_requested, min_free_mem_mb, gpu_mem_mb, allow_foreign, time_limit_s, retry_max, retry_on, assigned_gpus, pid, pid_start_time, host, run_dir, attempt, parent_id, cancel_requested, queued_at, started_at, finished_at, heartbeat_at, exit_code, exit_signal, failure_reason, failure_detail, log_tail, events_offset, progress_done, progress_total, eta_s, params) SELECT id, experiment_id, name, kind, spec, status, priority, gpus_requested, min_free_mem_mb, gpu_mem_mb, allow_foreign, time_limit_s, retry_max, retry_on, assigned_gpus, pid, pid_start_time, host, run_dir, attempt, parent_id, cancel_requested, queued_at, started_at, finished_at, heartbeat_at, exit_code, exit_signal, failure_reason, failure_detail, log_tail, events_offset, progress_done, progress_total, eta_s, params FROM job",
        "DROP TABLE job",
        "ALTER TABLE job_new RENAME TO job",
        "CREATE INDEX ix_job_experiment_id ON job (experiment_id)",
        "CREATE INDEX ix_job_kind ON job (kind)",
        "CREATE INDEX ix_job_status ON job (status)",
        "CREATE INDEX ix_job_status_priority ON job (status, priority DESC, id)",
    ],
    # 3 -> 4: the Slurm side of a job run by `--executor slurm`: its Slurm job id (also how a restarted
    # worker adopts it), the nodes it got, Slurm's own state and reason (PENDING / Resources).
    [
        "ALTER TABLE job ADD COLUMN slurm_job_id VARCHAR",
        "ALTER TABLE job ADD COLUMN slurm_nodes VARCHAR NOT NULL DEFAULT ''",
        "ALTER TABLE job ADD COLUMN slurm_state VARCHAR NOT NULL DEFAULT ''",
        "ALTER TABLE job ADD COLUMN slurm_reason VARCHAR NOT NULL DEFAULT ''",
    ],
    # 4 -> 5: an experiment can be archived (hidden from the experiments list, `labdeck ls` and the
    # jobs screen, its rows and run folders kept) and restored: when, or NULL. The partial index
    # answers "is anything archived?" without a scan, so lists pay nothing while nothing is.
    [
        "ALTER TABLE experiment ADD COLUMN archived_at FLOAT",
        "CREATE INDEX ix_experiment_archived ON experiment (archived_at) WHERE archived_at IS NOT NULL",
    ],
]

SCHEMA_VERSION = len(STEPS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer labdeck; opening it could lose data."""


class SchemaBusy(RuntimeError):
    """A worker of another labdeck version holds the home: migrating under it could lose data."""


def backup(conn: sqlite3.Connection, path: Path | str, version: int) -> Path:
    """A consistent copy of the database (`VACUUM INTO`, 0600) before a migration changes it."""
    path = Path(path)
    target = path.with_name(f"{path.name}.v{version}.bak")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.v{version}.{n}.bak")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    conn.execute("VACUUM INTO ?", (str(target),))
    return target


def current_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: str = "", target: int = SCHEMA_VERSION) -> int:
    """Bring `conn` up to `target`, one transaction per step. Returns the version reached.

    `conn` must be in autocommit mode (isolation_level None) so the explicit BEGIN holds.
    """
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path or 'database'}: schema version {version} is newer than this labdeck "
            f"understands ({SCHEMA_VERSION}); upgrade labdeck"
        )
    # A step that rebuilds a table drops the old one, which with foreign keys on would first
    # delete its rows (and fail on every row that references them): off while migrating, checked after.
    fk = conn.execute("PRAGMA foreign_keys").fetchone()[0]
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        return _migrate(conn, version, target)
    finally:
        conn.execute(f"PRAGMA foreign_keys = {int(fk)}")


def _migrate(conn: sqlite3.Connection, version: int, target: int) -> int:
    while version < target:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the lock: another process may have migrated meanwhile.
            version = current_version(conn)
            if version >= target:
                conn.execute("COMMIT")
                break
            for statement in STEPS[version]:
                conn.execute(statement)
            broken = conn.execute("PRAGMA foreign_key_check").fetchone()
            if broken is not None:
                raise sqlite3.IntegrityError(f"migration to version {version + 1} broke a reference: {tuple(broken)}")
            version += 1
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version
