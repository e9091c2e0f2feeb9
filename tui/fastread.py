"""The first screenful read with plain sqlite3, while SQLAlchemy is still being imported.

Importing the store layer (SQLAlchemy, sqlmodel, pydantic) costs about half a second of CPU on a
small shared box: more than everything else the app does before its first frame. The jobs screen
only needs two things to show something useful: the newest page of jobs and the overview line;
the experiments screen (`e` pressed at once) needs its first page. This module answers exactly
those through `db.reads` and `db.experiment_reads` (the same SQL the store's reads run, so both
give the same answers), on a read-only connection. Everything else, and every later refresh,
goes through the store.

It refuses (returns None) whenever it is not sure: no database yet, or a schema version other than
this release's (the store then opens, migrates and answers as usual).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from db import reads
from db.rows import ExperimentRow, GpuInfo, JobRow, WorkerState


def _connect(path: Path) -> sqlite3.Connection | None:
    from db.migrations import SchemaTooNew

    try:
        return reads.open_readonly(path.parent)
    except (reads.NoHome, reads.StoreNeedsMigration, SchemaTooNew, sqlite3.Error):
        return None


def first_page(path: Path, limit: int) -> tuple[list[JobRow], int, dict[int, dict[str, float]]] | None:
    """The newest `limit` jobs, how many jobs there are, and their latest metrics; None if unsure."""
    con = _connect(path)
    if con is None:
        return None
    try:
        rows, total = reads.page_jobs(con, limit=limit, hide_archived=True)
        return rows, total, reads.latest_metrics(con, [r.id for r in rows])
    finally:
        con.close()


def overview(path: Path, now: float) -> tuple[WorkerState, float | None, list[GpuInfo], dict[str, int], list[str]] | None:
    """(worker, GPU snapshot time, GPUs, counts by status, experiment names); None if unsure."""
    con = _connect(path)
    if con is None:
        return None
    try:
        at, gpus = reads.gpu_snapshot(con)
        return reads.worker_state(con, now), at, gpus, reads.count_jobs(con), reads.experiment_names(con)
    finally:
        con.close()


def experiments_page(path: Path, text: str | None, statuses: tuple[str, ...], limit: int,
                     archived: bool | None) -> tuple[list[ExperimentRow], int] | None:
    """The first page of the experiments list and how many match; None if unsure."""
    from db import experiment_reads

    con = _connect(path)
    if con is None:
        return None
    try:
        return experiment_reads.experiment_rows(con, text=text, statuses=statuses, limit=limit, archived=archived)
    finally:
        con.close()
