"""The worker's own reads and routine writes, kept beside the schema so a column change is made once.

The hot reads run as plain SQL on the worker's one long-lived sqlite3 connection: they run after
every commit by anyone (the worker's own ingestion included), so they skip the ORM (with
thousands of queued jobs an ORM round costs ~100 ms on a small box, these a few). The writes
(registering, heartbeats) take the caller's session and transaction. The read statements
themselves are in `db.schema`, with every other hand-written one.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

from sqlalchemy import and_, update
from sqlmodel import Session

from db.models import Job, Worker
from db.queue import get_setting, set_setting
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
    """Every runnable queued job in queue order: priority, then id (ids only grow; a wall-clock
    timestamp can step back)."""
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


def register(s: Session, *, host: str, pid: int, start: float, gpus: str, stop_key: str) -> int:
    """The worker's row; any older row still marked alive belongs to a dead worker (the caller holds
    the home's lock). A stop request addressed to an earlier worker is void."""
    now = time.time()
    s.execute(update(Worker).where(Worker.stopped_at.is_(None)).values(stopped_at=now, state="stopped"))
    w = Worker(host=host, pid=pid, pid_start_time=start, started_at=now, heartbeat_at=now, state="running", gpus=gpus)
    s.add(w)
    s.flush()
    assert w.id is not None
    if get_setting(s, stop_key, ""):
        set_setting(s, stop_key, "")
    return w.id


def heartbeat(s: Session, worker_id: int | None, running: list[int], tails: dict[int, str], now: float) -> None:
    """The worker's and its running jobs' heartbeats, and the log tails that changed."""
    s.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now))
    if running:
        s.execute(update(Job).where(and_(Job.id.in_(running), Job.status == JobStatus.running.value))
                  .values(heartbeat_at=now))
    for jid, tail in tails.items():
        s.execute(update(Job).where(Job.id == jid).values(log_tail=tail))
