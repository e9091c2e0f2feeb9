"""The worker's settings, what it knows about each job it watches, and how it records a job's end.

`Running` is the worker's side of one job (the executor's `Handle` plus what the worker needs for
time limits, retries and ingestion). `record_end` turns how it ended (`engine.outcome`) into its
terminal row, and queues the automatic retry its policy asks for, in the caller's transaction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.models import Job, JobStatus
from db.queue import IllegalTransition, retry, skip_dependents_of_failed, transition
from engine import ingest, outcome
from engine.events import EVENTS_FILE
from engine.executors import Handle
from engine.rundir import LOG_FILE

log = logging.getLogger("labdeck.worker")


@dataclass
class Config:
    """The worker's settings (`engine.daemon` builds them from its options)."""

    home: Path
    gpus: frozenset[int] | None = None  # None: every GPU found
    poll_s: float = 0.2
    heartbeat_s: float = 3.0
    kill_grace_s: float = 10.0
    cpu_slots: int | None = None  # concurrent CPU-only jobs; None: no limit
    backfill: bool = False
    wal_limit_mb: float = 64.0
    plan_cpu_share: float = 0.2  # planning may use at most about this share of a core (big queues)


@dataclass
class Running:
    """A job this worker watches: started by it, or adopted from a previous worker."""

    job_id: int
    kind: str
    handle: Handle
    run_dir: Path
    started_at: float  # wall clock, from the store (shown to people; never used to measure)
    mono_start: float = 0.0  # time.monotonic() when it started, as best known: what time limits count from
    gpus: tuple[int, ...] = ()
    share_mb: float = 0.0
    time_limit_s: float | None = None
    retry_max: int = 0
    retry_on: list[str] = field(default_factory=list)
    attempt: int = 1
    offset: int = 0
    inode: int = 0
    events_refused: bool = False  # the events file is not a regular file: not read any more
    stop_reason: str | None = None  # cancel | time_limit | stop_now
    stopping: bool = False
    log_size: int = -1

    @classmethod
    def of(cls, job: Job, handle: Handle, run_dir: Path, gpus: tuple[int, ...]) -> Running:
        """The watch record of a job row just started (or found running after a restart)."""
        assert job.id is not None
        if handle.elapsed_s is not None:
            elapsed = handle.elapsed_s
        elif handle.adopted and job.started_at:  # the executor cannot tell: the stored wall clock, once
            elapsed = max(0.0, time.time() - job.started_at)
        else:
            elapsed = 0.0
        return cls(
            job_id=job.id, kind=job.kind, handle=handle, run_dir=run_dir, started_at=job.started_at or time.time(),
            gpus=gpus, share_mb=float(job.gpu_mem_mb or 0), time_limit_s=job.time_limit_s, retry_max=job.retry_max,
            retry_on=json.loads(job.retry_on or "[]"), attempt=job.attempt, offset=job.events_offset,
            inode=job.events_inode, mono_start=time.monotonic() - elapsed,
        )

    def over_time_limit(self, now_mono: float) -> bool:
        return self.time_limit_s is not None and now_mono - self.mono_start > self.time_limit_s

    @property
    def pid(self) -> int:
        return self.handle.pid or 0

    def feed(self) -> ingest.Feed:
        return ingest.Feed(self.job_id, self.run_dir / EVENTS_FILE, self.offset, self.run_dir, self.inode,
                           final=self.handle.ended)


def record_end(s: Any, r: Running, tail: str, rec: dict[str, Any] | None, *, died_while_away: bool) -> None:
    """Give a job whose processes are gone its terminal status, in the caller's transaction, and
    queue its automatic retry when its policy names the reason."""
    row = s.get(Job, r.job_id)
    reported = (row.failure_reason, row.failure_detail) if row is not None and row.failure_reason else None
    out = outcome.classify(
        kind=r.kind, exit_record=rec, launcher_returncode=r.handle.returncode, stop_reason=r.stop_reason,
        reported_error=reported, log_tail=tail, died_while_away=died_while_away,
    )
    if r.handle.survivors:
        out = outcome.Outcome(out.status, out.reason,
                              out.detail + f"; processes {r.handle.survivors} survived SIGKILL",
                              out.exit_code, out.exit_signal)
    try:
        transition(s, r.job_id, out.status, exit_code=out.exit_code, exit_signal=out.exit_signal,
                   failure_reason=out.reason, failure_detail=out.detail, log_tail=tail,
                   heartbeat_at=time.time())
    except IllegalTransition as e:
        log.warning("job %d: %s", r.job_id, e)
        return
    log.info("job %d: %s%s", r.job_id, out.status.value, f" ({out.reason}: {out.detail})" if out.reason else "")
    if outcome.should_retry(out, r.retry_on, r.retry_max, r.attempt):
        new_id = retry(s, r.job_id, reason=out.reason or "")  # queued dependents follow the new attempt
        log.info("job %d: retry as job %d (attempt %d)", r.job_id, new_id, r.attempt + 1)


def changed_log_tails(running: Iterable[Running]) -> dict[int, str]:
    """The last lines of each job log that grew since the last heartbeat (what `ls` and the app show)."""
    tails = {}
    for r in running:
        try:
            size = (r.run_dir / LOG_FILE).stat().st_size
        except OSError:
            continue
        if size != r.log_size:
            r.log_size = size
            tails[r.job_id] = outcome.read_log_tail(r.run_dir / LOG_FILE)
    return tails


def record_failed_starts(s: Any, rows: list[tuple[Any, ...]]) -> None:
    """Jobs claimed whose processes could not be started: failed (spawn_error), retried when their
    policy names spawn_error, their dependents skipped. Rows: (id, kind, retry_max, retry_on json,
    attempt, message)."""
    for job_id, _kind, retry_max, retry_on, attempt, message in rows:
        try:
            transition(s, job_id, JobStatus.failed, failure_reason="spawn_error", failure_detail=message)
        except IllegalTransition as e:
            log.warning("job %d: %s", job_id, e)
            continue
        out = outcome.Outcome(JobStatus.failed, "spawn_error", message)
        if outcome.should_retry(out, json.loads(retry_on or "[]"), retry_max, attempt):
            log.info("job %d: retry as job %d (attempt %d)", job_id, retry(s, job_id, reason="spawn_error"),
                     attempt + 1)
    if rows:
        skip_dependents_of_failed(s)
