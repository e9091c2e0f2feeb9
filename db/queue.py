"""Every job state transition, in one place.

The lifecycle (see docs/ARCHITECTURE.md):

    queued --claim--> running --exit 0--> succeeded
      |                 |--exit != 0 / spawn error--> failed
      |                 |--cancel requested, group killed--> cancelled
      |                 '--worker restarts and the pid is gone--> interrupted
      |--a dependency failed--> skipped
      '--cancel before claim--> cancelled
    failed | cancelled | interrupted | skipped --retry--> a new queued job (attempt + 1, parent id)

Each transition is one `UPDATE ... WHERE id = ? AND status IN (allowed sources)`: two processes
racing on the same job can never both win, and a transition from a state that does not allow it
changes nothing and raises `IllegalTransition`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlmodel import Session

from db.models import (
    RETRYABLE_STATUSES,
    Artifact,
    Experiment,
    FailureReason,
    Job,
    JobDependency,
    JobStatus,
    Metric,
    Setting,
)
from db.schema import QUEUE_STATE_KEY, UnknownJob  # noqa: F401 - one definition, shared with db.reads

S = JobStatus

# target status -> the statuses it may be entered from
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    S.queued: frozenset(),  # only by creation (submit or retry)
    S.running: frozenset({S.queued}),
    S.succeeded: frozenset({S.running}),
    S.failed: frozenset({S.running, S.queued}),  # queued -> failed: could not start at all
    S.cancelled: frozenset({S.queued, S.running}),
    S.interrupted: frozenset({S.running}),
    S.skipped: frozenset({S.queued}),
}


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    return src in ALLOWED_FROM[dst]


class IllegalTransition(RuntimeError):
    """The job was not in a state from which the requested transition is allowed."""




@dataclass(frozen=True)
class JobDraft:
    """A job to create: what `engine.specfile` expands a spec file into.

    `depends_on` holds indices into the same batch of drafts (for pipelines) and
    `depends_on_ids` ids of jobs already stored.
    """

    experiment: str
    name: str
    kind: str
    spec: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    gpus_requested: int = 0
    min_free_mem_mb: int = 0
    gpu_mem_mb: int = 0
    allow_foreign: bool = False
    time_limit_s: float | None = None
    retry_max: int = 0
    retry_on: tuple[str, ...] = ()
    depends_on: tuple[int, ...] = ()
    depends_on_ids: tuple[int, ...] = ()


def bring_back(session: Session, experiment_id: int) -> None:
    """New work in an archived experiment restores it: a job queued or retried there must not be hidden."""
    session.execute(update(Experiment).where(Experiment.id == experiment_id, Experiment.archived_at.is_not(None))
                    .values(archived_at=None))


def _experiment_id(session: Session, name: str, now: float) -> int:
    found = session.execute(select(Experiment.id).where(Experiment.name == name)).first()
    if found is not None:
        bring_back(session, int(found[0]))
        return int(found[0])
    exp = Experiment(name=name, created_at=now)
    session.add(exp)
    session.flush()
    assert exp.id is not None
    return exp.id


def enqueue(session: Session, drafts: Sequence[JobDraft], resolve=None) -> list[int]:
    """Insert `drafts` as queued jobs with their dependencies, in the caller's transaction.

    `resolve(draft_index, spec, ids)` may rewrite a spec once every id in the batch is known
    (pipelines use it to turn a stage reference into the upstream job's output path).
    Returns the new ids in draft order. Raises `UnknownJob` for a missing `depends_on_ids`.
    """
    now = time.time()
    exp_ids: dict[str, int] = {}
    for draft in drafts:
        if draft.experiment not in exp_ids:
            exp_ids[draft.experiment] = _experiment_id(session, draft.experiment, now)
    values = [
        {
            "experiment_id": exp_ids[d.experiment],
            "name": d.name,
            "kind": d.kind,
            "spec": json.dumps(d.spec, sort_keys=True),
            "params": json.dumps(d.params, sort_keys=True),
            "status": S.queued.value,
            "priority": d.priority,
            "gpus_requested": d.gpus_requested,
            "min_free_mem_mb": d.min_free_mem_mb,
            "gpu_mem_mb": d.gpu_mem_mb,
            "allow_foreign": d.allow_foreign,
            "time_limit_s": d.time_limit_s,
            "retry_max": d.retry_max,
            "retry_on": json.dumps(list(d.retry_on)),
            "queued_at": now,
        }
        for d in drafts
    ]
    ids: list[int] = []
    if values:
        # One executemany with RETURNING, in parameter order: a 10,000-job sweep is one statement
        # batch rather than 10,000 ORM flushes.
        result = session.execute(
            insert(Job).returning(Job.id, sort_by_parameter_order=True), values
        )
        ids = [int(r[0]) for r in result.all()]
    external = {i for d in drafts for i in d.depends_on_ids}
    own = external & set(ids)
    if own:  # an id that did not exist before this submit: the job would wait for itself forever
        raise UnknownJob(f"dependency on job {min(own)}: no such job before this submit (a job cannot wait for itself)")
    if external:
        found = set(session.execute(select(Job.id).where(Job.id.in_(external))).scalars())
        missing = sorted(external - found)
        if missing:
            raise UnknownJob(f"dependency on job {missing[0]}: no such job")
    rows = []
    for i, draft in enumerate(drafts):
        rows += [{"job_id": ids[i], "depends_on_id": ids[j]} for j in draft.depends_on]
        rows += [{"job_id": ids[i], "depends_on_id": j} for j in draft.depends_on_ids]
    if rows:
        session.execute(insert(JobDependency), rows)
    if resolve is not None:
        for i, draft in enumerate(drafts):
            new_spec = resolve(i, draft.spec, ids)
            if new_spec is not draft.spec:
                session.execute(
                    update(Job).where(Job.id == ids[i]).values(spec=json.dumps(new_spec, sort_keys=True))
                )
    return ids


def _status_of(session: Session, job_id: int) -> JobStatus:
    row = session.execute(select(Job.status).where(Job.id == job_id)).first()
    if row is None:
        raise UnknownJob(f"job {job_id}: no such job")
    return JobStatus(row[0])


def transition(session: Session, job_id: int, to: JobStatus, **values: Any) -> None:
    """Move one job to `to`, setting `values` too, or raise `IllegalTransition`."""
    sources = ALLOWED_FROM[to]
    if not sources:
        raise IllegalTransition(f"job {job_id}: nothing may move into {to.value}")
    now = time.time()
    if to.is_terminal:
        values.setdefault("finished_at", now)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([s.value for s in sources]))
        .values(status=to.value, **values)
    )
    if result.rowcount != 1:
        current = _status_of(session, job_id)
        raise IllegalTransition(f"job {job_id}: cannot go from {current.value} to {to.value}")


def claim(session: Session, job_id: int, *, gpus: Iterable[int] = (), host: str = "", run_dir: str = "") -> bool:
    """Atomically take a queued job for running. True if this caller won it.

    One statement: `UPDATE job SET status='running' ... WHERE id=? AND status='queued'`; under
    BEGIN IMMEDIATE no two claimers can both see the job queued.
    """
    now = time.time()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == S.queued.value, Job.cancel_requested.is_(False))
        .values(
            status=S.running.value,
            started_at=now,
            heartbeat_at=now,
            assigned_gpus=",".join(str(g) for g in gpus),
            host=host,
            run_dir=run_dir,
        )
    )
    return result.rowcount == 1


def request_cancel(session: Session, job_id: int) -> JobStatus:
    """Cancel a job: a queued one at once, a running one by a flag the worker honours.

    Returns the job's status after the call. A finished job is left as it is.
    """
    status = _status_of(session, job_id)
    if status is S.queued:
        transition(session, job_id, S.cancelled, failure_reason=FailureReason.cancelled.value,
                   failure_detail="cancelled before it started")
        return S.cancelled
    if status is S.running:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    return status


def retry(session: Session, job_id: int, *, reason: str = "") -> int:
    """Queue a new attempt of a finished job; returns the new job's id.

    The new job copies the spec and resource request, links to its parent and keeps the parent's
    dependencies (so a retried pipeline stage still waits for its upstream). A succeeded fine-tune
    whose weights `labdeck prune` deleted may be retried too: that rebuilds them. An upstream whose
    weights were pruned is replaced by its rebuilding attempt, and without one the retry is refused
    (it would only fail, looking for a model that is gone).
    """
    job = session.get(Job, job_id)
    if job is None:
        raise UnknownJob(f"job {job_id}: no such job")
    rebuild = job.status is S.succeeded and job_id in pruned_jobs(session, [job_id])
    if job.status not in RETRYABLE_STATUSES and not rebuild:
        raise IllegalTransition(f"job {job_id}: a {job.status.value} job cannot be retried")
    live = session.execute(
        select(Job.id).where(Job.parent_id == job_id, Job.status.in_([S.queued.value, S.running.value]))
    ).scalars().first()
    if live is not None:
        raise IllegalTransition(f"job {job_id}: its retry, job {live}, is still {_status_of(session, live).value}; "
                                "one attempt at a time")
    fields = {
        c: getattr(job, c)
        for c in (
            "experiment_id", "name", "kind", "spec", "params", "priority", "gpus_requested",
            "min_free_mem_mb", "gpu_mem_mb", "allow_foreign", "time_limit_s", "retry_max", "retry_on",
        )
    }
    new = Job(**fields, attempt=job.attempt + 1, parent_id=job.id, queued_at=time.time())
    bring_back(session, job.experiment_id)
    session.add(new)
    session.flush()
    assert new.id is not None
    deps = session.execute(select(JobDependency.depends_on_id).where(JobDependency.job_id == job_id)).scalars().all()
    rows = [{"job_id": new.id, "depends_on_id": _readable_attempt(session, job_id, d)} for d in deps]
    if rows:
        session.execute(insert(JobDependency), rows)
    # Queued jobs still waiting for this one now wait for (and read the outputs of) the new attempt;
    # jobs already skipped because of it stay skipped unless `retry_with_dependents` brings them back.
    repoint_dependents(session, job_id, new.id)
    return new.id


def latest_attempt(session: Session, job_id: int) -> tuple[int, JobStatus]:
    """The newest attempt in `job_id`'s retry chain (its retries, theirs, ...; itself if none) and its
    status. A person who retries job 5 after its retry, job 9, also failed means "try again": the new
    attempt continues from 9, which the pipeline's dependents follow, not beside it from 5."""
    newest, frontier = job_id, [job_id]
    while frontier:
        frontier = [int(c) for c in session.execute(select(Job.id).where(Job.parent_id.in_(frontier))).scalars()]
        newest = max([newest, *frontier])
    return newest, _status_of(session, newest)


def pruned_jobs(session: Session, ids: Iterable[int]) -> set[int]:
    """The jobs among `ids` whose model weights `labdeck prune` deleted (their artifact rows say so)."""
    rows = session.execute(select(Artifact.job_id, Artifact.meta)
                           .where(Artifact.job_id.in_(list(ids)), Artifact.kind == "model")).all()
    return {int(j) for j, meta in rows if "pruned_at" in json.loads(meta or "{}")}


def _readable_attempt(session: Session, job_id: int, upstream: int) -> int:
    """The attempt of `upstream` whose outputs a retry of `job_id` can read: `upstream` itself unless
    its weights were pruned, else its newest retry (transitively) that is queued, running or succeeded
    with its weights. Raises IllegalTransition when there is none."""
    if upstream not in pruned_jobs(session, [upstream]):
        return upstream
    attempts: list[tuple[int, JobStatus]] = []
    frontier = [upstream]
    while frontier:
        children = [(int(c), JobStatus(st)) for c, st in
                    session.execute(select(Job.id, Job.status).where(Job.parent_id.in_(frontier))).all()]
        attempts += children
        frontier = [c for c, _ in children]
    alive = [c for c, st in attempts if st in (S.queued, S.running, S.succeeded)]
    alive = sorted(set(alive) - pruned_jobs(session, alive))
    if not alive:
        raise IllegalTransition(f"job {job_id}: it reads job {upstream}'s model, which `labdeck prune` deleted; "
                                f"retry job {upstream} first to rebuild it")
    return alive[-1]


def retry_with_dependents(session: Session, job_id: int) -> dict[int, int]:
    """Retry a job and every job skipped because of it, transitively: {old id: new id}.

    What a pipeline user means by "retry this stage": the stages downstream of a failure were
    skipped, and they come back queued behind the new attempt, reading its outputs. A skipped job
    that also waits for another failed job is retried too, and is skipped again until that one is.
    """
    mapping = {job_id: retry(session, job_id)}
    frontier = [job_id]
    while frontier:
        old = frontier.pop(0)
        skipped = session.execute(
            select(Job.id)
            .join(JobDependency, JobDependency.job_id == Job.id)
            .where(JobDependency.depends_on_id == old, Job.status == S.skipped.value)
            .order_by(Job.id)
        ).scalars().all()
        for dep in skipped:
            if dep not in mapping:
                mapping[dep] = retry(session, dep)
                frontier.append(dep)
    for old, new in mapping.items():  # the new attempts wait for each other, not for the old ones
        repoint_dependents(session, old, new)
    return mapping


def delete_jobs(session: Session, job_ids: Sequence[int]) -> list[int]:
    """Delete finished jobs with their metrics, artifacts and dependency rows; returns the ids.

    Refused (nothing deleted) for a job that is queued or running, or that a queued or running job
    still depends on: cancel those first. Retries of a deleted job keep their own rows and lose only
    the parent link. Empty experiments go too. The caller removes the run folders after commit.
    """
    ids = sorted(set(job_ids))
    rows = session.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all()
    found = {i: JobStatus(st) for i, st in rows}
    for i in ids:
        if i not in found:
            raise UnknownJob(f"job {i}: no such job")
        if not found[i].is_terminal:
            raise IllegalTransition(f"job {i}: a {found[i].value} job cannot be deleted; cancel it first")
    waiting = session.execute(
        select(JobDependency.job_id, JobDependency.depends_on_id)
        .join(Job, Job.id == JobDependency.job_id)
        .where(JobDependency.depends_on_id.in_(ids), Job.status.in_([S.queued.value, S.running.value]))
    ).first()
    if waiting is not None:
        raise IllegalTransition(f"job {waiting[1]}: job {waiting[0]} still waits for it; cancel or delete that first")
    experiments = set(session.execute(select(Job.experiment_id).where(Job.id.in_(ids))).scalars())
    session.execute(update(Job).where(Job.parent_id.in_(ids)).values(parent_id=None))
    session.execute(delete(Metric).where(Metric.job_id.in_(ids)))
    session.execute(delete(Artifact).where(Artifact.job_id.in_(ids)))
    session.execute(delete(JobDependency).where(JobDependency.job_id.in_(ids) | JobDependency.depends_on_id.in_(ids)))
    session.execute(delete(Job).where(Job.id.in_(ids)))
    still_used = set(session.execute(select(Job.experiment_id).where(Job.experiment_id.in_(experiments))).scalars())
    if experiments - still_used:
        session.execute(delete(Experiment).where(Experiment.id.in_(experiments - still_used)))
    return ids


def set_priority(session: Session, job_id: int, priority: int) -> None:
    status = _status_of(session, job_id)
    if status is not S.queued:
        raise IllegalTransition(f"job {job_id}: only a queued job's priority can change (it is {status.value})")
    session.execute(update(Job).where(Job.id == job_id).values(priority=priority))


def skip_dependents_of_failed(session: Session) -> list[int]:
    """Mark `skipped` every queued job with a dependency that ended without success.

    Repeats until nothing changes, so a chain a -> b -> c skips both b and c. Returns the ids.
    """
    skipped: list[int] = []
    bad = [S.failed.value, S.cancelled.value, S.interrupted.value, S.skipped.value]
    while True:
        dep = Job.__table__.alias("dep")
        rows = session.execute(
            select(Job.id, func.min(dep.c.id), func.min(dep.c.name), func.min(dep.c.status))
            .join(JobDependency, JobDependency.job_id == Job.id)
            .join(dep, dep.c.id == JobDependency.depends_on_id)
            .where(Job.status == S.queued.value, dep.c.status.in_(bad))
            .group_by(Job.id)
        ).all()
        if not rows:
            return skipped
        for job_id, dep_id, dep_name, dep_status in rows:
            transition(
                session, job_id, S.skipped,
                failure_reason=FailureReason.dependency.value,
                failure_detail=f"dependency job {dep_id} ({dep_name}) ended {getattr(dep_status, 'value', dep_status)}",
            )
            skipped.append(job_id)


def record_metrics(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert metric rows (job_id, name, step, value, time) in one executemany."""
    if rows:
        session.execute(insert(Metric), list(rows))


def record_artifacts(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(Artifact), list(rows))


def set_setting(session: Session, key: str, value: str) -> None:
    existing = session.get(Setting, key)
    if existing is None:
        session.add(Setting(key=key, value=value))
    else:
        existing.value = value


def get_setting(session: Session, key: str, default: str = "") -> str:
    row = session.get(Setting, key)
    return default if row is None else row.value


def set_queue_state(session: Session, state: str) -> None:
    if state not in ("running", "paused", "draining"):
        raise ValueError(f"queue state: {state!r} is not one of running, paused, draining")
    set_setting(session, QUEUE_STATE_KEY, state)


def repoint_dependents(session: Session, old_id: int, new_id: int) -> int:
    """Make queued jobs that wait for `old_id` wait for its retry `new_id` instead; returns how many.

    A stage's spec names its upstream by id (`${job:ID.output}`, see `db.stagerefs`); the worker
    follows these dependency rows (and the retry's parent link) when it prepares the run folder, so
    the dependent reads the new attempt's outputs, never the failed attempt's leftovers, and no
    spec text is rewritten. Used by a manual retry and when the worker retries a job automatically
    in the same transaction that records its failure.
    """
    queued = select(Job.id).where(Job.status == S.queued.value)
    waiting = session.execute(
        select(JobDependency.job_id).where(JobDependency.depends_on_id == old_id, JobDependency.job_id.in_(queued))
    ).scalars().all()
    if not waiting:
        return 0
    session.execute(
        update(JobDependency)
        .where(JobDependency.depends_on_id == old_id, JobDependency.job_id.in_(waiting))
        .values(depends_on_id=new_id)
    )
    return len(waiting)
