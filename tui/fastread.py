"""The first screenful read with plain sqlite3, while SQLAlchemy is still being imported.

Importing the store layer (SQLAlchemy, sqlmodel, pydantic) costs about half a second of CPU on a
small shared box: more than everything else the app does before its first frame. The jobs screen
only needs two things to show something useful: the newest page of jobs and the overview line.
This module answers exactly those two, with the same SQL `db.queries` generates (compiled from
`page_jobs` / `worker_state` / `gpu_snapshot` / `count_jobs` / `experiment_names`), into the same
SQLAlchemy-free types (`db.rows`); a test checks both give the same answers. Everything else, and
every later refresh, goes through `db.queries`.

It refuses (returns None) whenever it is not sure: no database yet, or a schema version other than
the one it was written for (the store then opens, migrates and answers as usual).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from db.rows import GpuInfo, JobRow, WorkerState, parse_gpu_snapshot

SCHEMA_VERSION = 3  # db.migrations.SCHEMA_VERSION when this was written

_COLUMNS = (
    "job.id, experiment.name, job.name, job.kind, job.status, job.priority, job.gpus_requested, job.assigned_gpus, "
    "job.attempt, job.queued_at, job.started_at, job.finished_at, job.progress_done, job.progress_total, job.eta_s, "
    "job.failure_reason, job.params"
)


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    con = sqlite3.connect(path, timeout=10)  # only reads; WAL readers may need to create -shm
    con.execute("PRAGMA busy_timeout = 10000")
    if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        con.close()
        return None
    return con


def first_page(path: Path, limit: int) -> tuple[list[JobRow], int, dict[int, dict[str, float]]] | None:
    """The newest `limit` jobs, how many jobs there are, and their latest metrics; None if unsure."""
    con = _connect(path)
    if con is None:
        return None
    try:
        raw = con.execute(
            f"SELECT {_COLUMNS} FROM job JOIN experiment ON experiment.id = job.experiment_id "
            "ORDER BY job.id DESC LIMIT ? OFFSET 0", (limit,)
        ).fetchall()
        total = con.execute("SELECT count(*) FROM job").fetchone()[0]
        rows = [JobRow(*r[:16], json.loads(r[16] or "{}")) for r in raw]
        metrics: dict[int, dict[str, float]] = {}
        if rows:
            ids = [r.id for r in rows]
            marks = ",".join("?" * len(ids))
            for job_id, name, value in con.execute(
                "SELECT metric.job_id, metric.name, metric.value FROM metric JOIN ("
                f"SELECT metric.job_id AS job_id, metric.name AS name, max(metric.id) AS mid FROM metric "
                f"WHERE metric.job_id IN ({marks}) GROUP BY metric.job_id, metric.name) AS anon_1 "
                "ON metric.id = anon_1.mid", ids,
            ):
                metrics.setdefault(job_id, {})[name] = value
        return rows, total, metrics
    finally:
        con.close()


def overview(path: Path, now: float) -> tuple[WorkerState, float | None, list[GpuInfo], dict[str, int], list[str]] | None:
    """(worker, GPU snapshot time, GPUs, counts by status, experiment names); None if unsure."""
    con = _connect(path)
    if con is None:
        return None
    try:
        settings = dict(con.execute("SELECT key, value FROM setting WHERE key IN ('queue_state', 'gpu_snapshot')"))
        queue_state = settings.get("queue_state", "running")
        w = con.execute(
            "SELECT pid, host, heartbeat_at, state, gpus FROM worker WHERE stopped_at IS NULL "
            "ORDER BY heartbeat_at DESC LIMIT 1"
        ).fetchone()
        worker = WorkerState.of(w, queue_state, now)
        at, gpus = parse_gpu_snapshot(settings.get("gpu_snapshot"))
        counts = dict(con.execute("SELECT status, count(*) FROM job GROUP BY status"))
        names = [n for (n,) in con.execute("SELECT name FROM experiment ORDER BY id DESC")]
        return worker, at, gpus, counts, names
    finally:
        con.close()
