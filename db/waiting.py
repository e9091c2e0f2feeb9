"""What the queue looks like to the scheduler, read from the store: why a queued job waits.

The worker keeps its reasons in memory; the app and the CLI rebuild them from the same inputs
(queued jobs with their dependencies, running jobs' GPUs, the worker's published GPU snapshot,
the queue state) and hand them to the pure `engine.scheduler.plan`, as Slurm's `Reason` column
does for squeue. This module only reads; it returns plain values and imports no engine code.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session

from db.models import Job, JobDependency
from db.queries import gpu_snapshot, worker_state
from db.rows import GpuInfo, WorkerState


@dataclass(frozen=True)
class QueuedJob:
    id: int
    name: str
    priority: int
    queued_at: float
    gpus: int
    min_free_mb: float
    share_mb: float
    allow_foreign: bool
    depends_on: tuple[int, ...]


@dataclass(frozen=True)
class RunningJob:
    id: int
    gpus: tuple[int, ...]
    share_mb: float


@dataclass(frozen=True)
class QueueView:
    worker: WorkerState
    gpus: tuple[GpuInfo, ...]
    queued: tuple[QueuedJob, ...]
    running: tuple[RunningJob, ...]
    dependencies: dict[int, tuple[str, str]]  # upstream job id -> (name, status)
    truncated: bool = False  # more jobs are queued than `queued` holds (the head of the queue)


HEAD_OF_QUEUE = 5000  # planned in full; a job further back is "behind" them, whatever else holds it


def queue_view(session: Session, now: float, limit: int = HEAD_OF_QUEUE) -> QueueView:
    """The head of the queue (the first `limit` queued jobs in start order, not being cancelled)
    with what decides whether each can start: a page's reasons cost the same at any queue length."""
    rows = session.execute(
        select(Job.id, Job.name, Job.priority, Job.queued_at, Job.gpus_requested, Job.min_free_mem_mb,
               Job.gpu_mem_mb, Job.allow_foreign)
        .where(Job.status == "queued", Job.cancel_requested.is_(False))
        .order_by(Job.priority.desc(), Job.queued_at, Job.id).limit(limit)
    ).all()
    up = Job.__table__.alias("up")
    q = Job.__table__.alias("q")
    deps: dict[int, list[int]] = {}
    upstream: dict[int, tuple[str, str]] = {}
    for jid, dep_id, dep_name, dep_status in session.execute(
        select(JobDependency.job_id, JobDependency.depends_on_id, up.c.name, up.c.status)
        .join(q, q.c.id == JobDependency.job_id).join(up, up.c.id == JobDependency.depends_on_id)
        .where(q.c.status == "queued", q.c.id.in_([r[0] for r in rows]))
    ).all():
        deps.setdefault(jid, []).append(dep_id)
        upstream[dep_id] = (dep_name, getattr(dep_status, "value", dep_status))
    running = session.execute(
        select(Job.id, Job.assigned_gpus, Job.gpu_mem_mb).where(Job.status == "running")
    ).all()
    _, gpus = gpu_snapshot(session)
    return QueueView(
        worker=worker_state(session, now=now),
        gpus=tuple(gpus),
        queued=tuple(QueuedJob(r[0], r[1], r[2], r[3], r[4], float(r[5]), float(r[6]), bool(r[7]),
                               tuple(sorted(deps.get(r[0], ())))) for r in rows),
        running=tuple(RunningJob(r[0], tuple(int(g) for g in r[1].split(",") if g.strip().isdigit()), float(r[2]))
                      for r in running),
        dependencies=upstream,
        truncated=len(rows) >= limit,
    )
