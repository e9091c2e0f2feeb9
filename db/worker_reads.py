"""The worker's hot reads, as plain SQL on its one long-lived sqlite3 connection.

They run after every commit by anyone (the worker's own ingestion included), so they skip the
ORM: with thousands of queued jobs an ORM round costs ~100 ms on a small box, these a few. The
statements themselves are in `db.schema`, with every other hand-written one.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from db.schema import (
    QUEUE_FINGERPRINT,
    QUEUED_DEPENDENCIES,
    QUEUED_FOR_SCHEDULER,
    RUNNING_CANCEL_REQUESTED,
    JobStatus,
)

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
    cancel_ids = [r[0] for r in db.execute(RUNNING_CANCEL_REQUESTED).fetchall()]
    fingerprint = tuple(db.execute(QUEUE_FINGERPRINT).fetchone())
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
    rows = db.execute(QUEUED_FOR_SCHEDULER).fetchall()
    view = QueueView(rows)
    if not rows:
        return view
    deps = db.execute(QUEUED_DEPENDENCIES).fetchall()
    for jid, dep_id, dep_status in deps:
        view.depends.setdefault(jid, []).append(dep_id)
        if dep_status == JobStatus.succeeded.value:
            view.succeeded.add(dep_id)
        elif dep_status in BAD_DEP_STATUSES:
            view.any_bad_dependency = True
    return view
