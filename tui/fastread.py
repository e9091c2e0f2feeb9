"""The first screenful read with plain sqlite3, while SQLAlchemy is still being imported.

Importing the store layer (SQLAlchemy, sqlmodel, pydantic) costs about half a second of CPU on a
small shared box: more than everything else the app does before its first frame. The jobs screen
only needs two things to show something useful: the newest page of jobs and the overview line.
This module answers exactly those two, with the same SQL `db.queries` generates (compiled from
`page_jobs` / `worker_state` / `gpu_snapshot` / `count_jobs` / `experiment_names`), into look-alike
values; a test checks both give the same answers. Everything else, and every later refresh, goes
through `db.queries`.

It refuses (returns None) whenever it is not sure: no database yet, or a schema version other than
the one it was written for (the store then opens, migrates and answers as usual).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2  # db.migrations.SCHEMA_VERSION when this was written
WORKER_STALE_S = 15.0

_COLUMNS = (
    "job.id, experiment.name, job.name, job.kind, job.status, job.priority, job.gpus_requested, job.assigned_gpus, "
    "job.attempt, job.queued_at, job.started_at, job.finished_at, job.progress_done, job.progress_total, job.eta_s, "
    "job.failure_reason, job.params"
)


@dataclass(frozen=True)
class Row:
    """The fields of `db.queries.JobRow` the jobs table reads, with its two helpers."""

    id: int
    experiment: str
    name: str
    kind: str
    status: str
    priority: int
    gpus_requested: int
    assigned_gpus: str
    attempt: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    progress_done: float | None
    progress_total: float | None
    eta_s: float | None
    failure_reason: str | None
    params: dict[str, Any]

    @property
    def fraction(self) -> float | None:
        if self.progress_total and self.progress_done is not None:
            return max(0.0, min(1.0, self.progress_done / self.progress_total))
        return None

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now or time.time()) - self.started_at


@dataclass(frozen=True)
class Worker:
    online: bool
    pid: int | None
    host: str
    heartbeat_at: float | None
    state: str
    gpus: str
    queue_state: str


@dataclass(frozen=True)
class Process:
    pid: int
    mem_mb: float
    job_id: int | None
    name: str = ""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    mem_total_mb: float
    mem_used_mb: float
    util_pct: float | None
    processes: tuple[Process, ...] = field(default_factory=tuple)


def _connect(path: Path) -> sqlite3.Connection | None:
    if not path.exists():
        return None
    con = sqlite3.connect(path, timeout=10)  # only reads; WAL readers may need to create -shm
    con.execute("PRAGMA busy_timeout = 10000")
    if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        con.close()
        return None
    return con


def first_page(path: Path, limit: int) -> tuple[list[Row], int, dict[int, dict[str, float]]] | None:
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
        rows = [Row(*r[:16], json.loads(r[16] or "{}")) for r in raw]
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


def overview(path: Path, now: float) -> tuple[Worker, float | None, list[Gpu], dict[str, int], list[str]] | None:
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
        if w is None:
            worker = Worker(False, None, "", None, "none", "", queue_state)
        else:
            online = now - w[2] < WORKER_STALE_S
            worker = Worker(online, w[0], w[1], w[2], w[3] if online else "offline", w[4], queue_state)
        gpus: list[Gpu] = []
        at = None
        if settings.get("gpu_snapshot"):
            data = json.loads(settings["gpu_snapshot"])
            at = data.get("t")
            gpus = [
                Gpu(g["index"], g.get("name", ""), g.get("mem_total_mb", 0.0), g.get("mem_used_mb", 0.0), g.get("util_pct"),
                    tuple(Process(p["pid"], p.get("mem_mb", 0.0), p.get("job_id"), p.get("name", ""))
                          for p in g.get("processes", [])))
                for g in data.get("gpus", [])
            ]
        counts = dict(con.execute("SELECT status, count(*) FROM job GROUP BY status"))
        names = [n for (n,) in con.execute("SELECT name FROM experiment ORDER BY id DESC")]
        return worker, at, gpus, counts, names
    finally:
        con.close()
