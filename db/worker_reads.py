"""The worker's hot reads, as plain SQL on its one long-lived sqlite3 connection.

They run after every commit by anyone (the worker's own ingestion included), so they skip the
ORM: with thousands of queued jobs an ORM round costs ~100 ms on a small box, these a few. Kept
here, beside the schema, so a column change is made in one package.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from db.models import JobStatus

BAD_DEP_STATUSES = (JobStatus.failed.value, JobStatus.cancelled.value, JobStatus.interrupted.value,
                    JobStatus.skipped.value)


@dataclass(frozen=True)
class Commands:
    """What other processes asked the worker for since it last looked."""

    settings: dict[str, str]
    cancel_ids: list[int]
    fingerprint: tuple[object, ...]  # changes whenever the set or order of runnable queued jobs may have


def read_commands(db: sqlite3.Connection, keys: tuple[str, ...]) -> Commands:
    settings = dict(db.execute(f"SELECT key, value FROM setting WHERE key IN ({', '.join('?' * len(keys))})",
                               keys).fetchall())
    cancel_ids = [r[0] for r in db.execute(
        "SELECT id FROM job WHERE status = 'running' AND cancel_requested = 1").fetchall()]
    fingerprint = tuple(db.execute(
        "SELECT count(*), max(id), total(priority * id) FROM job WHERE status = 'queued' AND cancel_requested = 0"
    ).fetchone())
    return Commands(settings, cancel_ids, fingerprint)


@dataclass
class QueueView:
    """The queued jobs in queue order, their dependencies, and which of those succeeded."""

    rows: list[tuple[int, int, float, int, int, int, int]]  # id, priority, queued_at, gpus, min free, share, foreign
    depends: dict[int, list[int]] = field(default_factory=dict)
    succeeded: set[int] = field(default_factory=set)
    any_bad_dependency: bool = False


def read_queue(db: sqlite3.Connection) -> QueueView:
    """Every runnable queued job, highest priority first."""
    rows = db.execute(
        "SELECT id, priority, queued_at, gpus_requested, min_free_mem_mb, gpu_mem_mb, allow_foreign FROM job "
        "WHERE status = 'queued' AND cancel_requested = 0 ORDER BY priority DESC, queued_at, id"
    ).fetchall()
    view = QueueView(rows)
    if not rows:
        return view
    deps = db.execute(
        "SELECT d.job_id, d.depends_on_id, up.status FROM jobdependency d "
        "JOIN job q ON q.id = d.job_id JOIN job up ON up.id = d.depends_on_id "
        "WHERE q.status = 'queued'"
    ).fetchall()
    for jid, dep_id, dep_status in deps:
        view.depends.setdefault(jid, []).append(dep_id)
        if dep_status == JobStatus.succeeded.value:
            view.succeeded.add(dep_id)
        elif dep_status in BAD_DEP_STATUSES:
            view.any_bad_dependency = True
    return view
