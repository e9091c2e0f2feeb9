"""The read side: plain frozen dataclasses for the CLI and the TUI, never ORM objects.

Widgets and commands get values, not live rows, so nothing they hold can trigger a lazy load on
the event loop or keep a transaction open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlmodel import Session

from db.models import Artifact, Experiment, Job, JobDependency, JobStatus, Metric, Worker
from db.queue import QUEUE_STATE_KEY, UnknownJob, get_setting
from db.rows import GpuInfo, JobRow, WorkerState, parse_gpu_snapshot


@dataclass(frozen=True)
class ArtifactRow:
    kind: str
    path: str
    meta: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class JobDetail:
    row: JobRow
    spec: dict[str, Any]
    run_dir: str
    pid: int | None
    host: str
    exit_code: int | None
    exit_signal: int | None
    failure_detail: str
    log_tail: str
    heartbeat_at: float | None
    cancel_requested: bool
    parent_id: int | None
    depends_on: list[int]
    metrics: dict[str, float]  # latest value of every metric
    artifacts: list[ArtifactRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = self.row.as_dict()
        d.update(
            spec=self.spec, run_dir=self.run_dir,
            log_path=f"{self.run_dir}/log.txt" if self.run_dir else None,
            pid=self.pid, host=self.host, exit_code=self.exit_code, exit_signal=self.exit_signal,
            failure_detail=self.failure_detail, log_tail=self.log_tail, heartbeat_at=self.heartbeat_at,
            cancel_requested=self.cancel_requested, parent_id=self.parent_id, depends_on=self.depends_on,
            metrics=self.metrics,
            artifacts=[{"kind": a.kind, "path": a.path, "meta": a.meta, "created_at": a.created_at} for a in self.artifacts],
            timestamps={"queued": self.row.queued_at, "started": self.row.started_at,
                        "finished": self.row.finished_at, "heartbeat": self.heartbeat_at},
        )
        return d


_ROW_COLUMNS = (
    Job.id, Experiment.name, Job.name, Job.kind, Job.status, Job.priority, Job.gpus_requested,
    Job.assigned_gpus, Job.attempt, Job.queued_at, Job.started_at, Job.finished_at, Job.progress_done,
    Job.progress_total, Job.eta_s, Job.failure_reason, Job.params, Job.slurm_job_id, Job.slurm_state,
    Job.slurm_reason, Job.slurm_nodes,
)


def _row(r: Sequence[Any]) -> JobRow:
    values = list(r)
    values[4] = JobStatus(values[4]).value  # a plain str: f-strings of a str-Enum print "JobStatus.x"
    values[16] = json.loads(values[16] or "{}")
    return JobRow(*values)


def list_jobs(
    session: Session,
    *,
    experiment: str | None = None,
    statuses: Sequence[str] = (),
    kinds: Sequence[str] = (),
    text: str | None = None,
    limit: int | None = None,
    before_id: int | None = None,
    newest_first: bool = True,
) -> list[JobRow]:
    """Jobs matching the filters. Keyset pagination: pass the last id seen as `before_id`."""
    q = _job_filters(select(*_ROW_COLUMNS).join(Experiment, Experiment.id == Job.experiment_id),
                     experiment, statuses, kinds, text)
    if before_id is not None:
        q = q.where(Job.id < before_id if newest_first else Job.id > before_id)
    q = q.order_by(Job.id.desc() if newest_first else Job.id.asc())
    if limit is not None:
        q = q.limit(limit)
    return [_row(r) for r in session.execute(q).all()]


def count_jobs(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {(s.value if isinstance(s, JobStatus) else s): n for s, n in rows}


def latest_metrics(session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """The most recent value (highest step, then latest row) of every metric of these jobs."""
    if not job_ids:
        return {}
    latest = (
        select(Metric.job_id, Metric.name, func.max(Metric.id).label("mid"))
        .where(Metric.job_id.in_(list(job_ids)))
        .group_by(Metric.job_id, Metric.name)
        .subquery()
    )
    rows = session.execute(
        select(Metric.job_id, Metric.name, Metric.value).join(latest, Metric.id == latest.c.mid)
    ).all()
    out: dict[int, dict[str, float]] = {}
    for job_id, name, value in rows:
        out.setdefault(job_id, {})[name] = value
    return out


def job_detail(session: Session, job_id: int) -> JobDetail:
    r = session.execute(
        select(*_ROW_COLUMNS).join(Experiment, Experiment.id == Job.experiment_id).where(Job.id == job_id)
    ).first()
    if r is None:
        raise UnknownJob(f"job {job_id}: no such job")
    job = session.get(Job, job_id)
    assert job is not None
    deps = list(session.execute(select(JobDependency.depends_on_id).where(JobDependency.job_id == job_id)).scalars())
    arts = session.execute(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)).scalars()
    return JobDetail(
        row=_row(r), spec=json.loads(job.spec), run_dir=job.run_dir, pid=job.pid, host=job.host,
        exit_code=job.exit_code, exit_signal=job.exit_signal, failure_detail=job.failure_detail,
        log_tail=job.log_tail, heartbeat_at=job.heartbeat_at, cancel_requested=job.cancel_requested,
        parent_id=job.parent_id, depends_on=sorted(deps), metrics=latest_metrics(session, [job_id]).get(job_id, {}),
        artifacts=[ArtifactRow(a.kind, a.path, json.loads(a.meta or "{}"), a.created_at) for a in arts],
    )


def job_ids_exist(session: Session, ids: Sequence[int]) -> list[int]:
    """The ids among `ids` that do not exist."""
    found = set(session.execute(select(Job.id).where(Job.id.in_(list(ids)))).scalars())
    return [i for i in ids if i not in found]


def metric_names(session: Session, job_id: int) -> list[str]:
    return list(session.execute(select(Metric.name).where(Metric.job_id == job_id).distinct().order_by(Metric.name)).scalars())


def metric_series(session: Session, job_id: int, name: str, limit: int = 5000) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, oldest first; summaries without a step are left out.

    Long series are thinned to about `limit` points (every k-th row) so charts stay cheap.
    """
    n = session.execute(
        select(func.count()).where(Metric.job_id == job_id, Metric.name == name, Metric.step.is_not(None))
    ).scalar_one()
    q = select(Metric.step, Metric.value).where(
        Metric.job_id == job_id, Metric.name == name, Metric.step.is_not(None)
    ).order_by(Metric.step, Metric.id)
    rows = session.execute(q).all()
    if n > limit:
        k = -(-n // limit)
        rows = rows[::k]
    return [(int(s), float(v)) for s, v in rows]


def experiments(session: Session) -> list[tuple[str, int]]:
    """(name, job count) for every experiment, newest first."""
    rows = session.execute(
        select(Experiment.name, func.count(Job.id))
        .join(Job, Job.experiment_id == Experiment.id, isouter=True)
        .group_by(Experiment.id)
        .order_by(Experiment.id.desc())
    ).all()
    return [(n, c) for n, c in rows]


@dataclass(frozen=True)
class ResultRow:
    """One job as the results pivot sees it: identity, parameters, spec and one reduced metric."""

    id: int
    name: str
    kind: str
    status: str
    params: dict[str, Any]
    spec: dict[str, Any]
    value: float | None


GROUP_PARAM = "group"


def is_metric_pattern(metric: str) -> bool:
    """A metric name with one '*' stands for a family, e.g. 'auroc/*' (one per MMLU subject)."""
    return metric.count("*") == 1


def experiment_metric(session: Session, experiment: str, metric: str, reduce: str = "last") -> list[ResultRow]:
    """Every job of `experiment` with metric `metric` reduced over its rows (last/min/max/mean).

    A pattern with one '*' (`auroc/*`) gives one row per job and matching metric instead, the part the
    '*' matched in `params["group"]` and the metric's name in `params["metric"]`: the per-subject
    metrics of a score job with a `group_field` pivot as rows `group`. Jobs with no match give one
    row without a value (counted as missing).
    """
    exp_id = _experiment_id(session, experiment)
    if is_metric_pattern(metric):
        return _experiment_metric_family(session, exp_id, metric, reduce)
    values = _reduced_metrics(session, exp_id, Metric.name == metric, reduce)
    return [_result_row(job, values.get((job[0], metric))) for job in _experiment_jobs(session, exp_id)]


_REDUCERS = {"min": func.min(Metric.value), "max": func.max(Metric.value), "mean": func.avg(Metric.value),
             "last": func.max(Metric.id)}


def _experiment_id(session: Session, experiment: str) -> int:
    exp = session.execute(select(Experiment.id).where(Experiment.name == experiment)).first()
    if exp is None:
        raise LookupError(f"experiment {experiment!r}: no such experiment")
    return int(exp[0])


def _reduced_metrics(session: Session, exp_id: int, name_filter: Any, reduce: str) -> dict[tuple[int, str], float | None]:
    """{(job id, metric name): value} over the experiment's metrics matching `name_filter`, reduced in SQL."""
    agg = _REDUCERS.get(reduce)
    if agg is None:
        raise ValueError(f"--reduce: {reduce!r} is not one of last, min, max, mean")
    rows = session.execute(
        select(Metric.job_id, Metric.name, agg)
        .join(Job, Job.id == Metric.job_id)
        .where(Job.experiment_id == exp_id, name_filter)
        .group_by(Metric.job_id, Metric.name)
    ).all()
    if reduce != "last":
        return {(j, n): v for j, n, v in rows}
    ids = [v for *_, v in rows]
    last = dict(session.execute(select(Metric.id, Metric.value).where(Metric.id.in_(ids))).all()) if ids else {}
    return {(j, n): last.get(v) for j, n, v in rows}


def _experiment_jobs(session: Session, exp_id: int) -> list[Any]:
    return session.execute(
        select(Job.id, Job.name, Job.kind, Job.status, Job.params, Job.spec).where(Job.experiment_id == exp_id).order_by(Job.id)
    ).all()


def _result_row(job: Any, value: float | None, extra: dict[str, Any] | None = None) -> ResultRow:
    jid, name, kind, status, params, spec = job
    return ResultRow(jid, name, kind, status.value if isinstance(status, JobStatus) else status,
                     {**json.loads(params or "{}"), **(extra or {})}, json.loads(spec), value)


def worker_state(session: Session, now: float | None = None) -> WorkerState:
    now = now or time.time()
    queue_state = get_setting(session, QUEUE_STATE_KEY, "running")
    w = session.execute(
        select(Worker).where(and_(Worker.stopped_at.is_(None))).order_by(Worker.heartbeat_at.desc())
    ).scalars().first()
    return WorkerState.of(None if w is None else (w.pid, w.host, w.heartbeat_at, w.state, w.gpus), queue_state, now)


GPU_SNAPSHOT_KEY = "gpu_snapshot"


def gpu_snapshot(session: Session) -> tuple[float | None, list[GpuInfo]]:
    """The worker's latest GPU inventory (written every heartbeat) and when it was taken.

    The worker is the only process that talks to NVML; the CLI and the TUI read this row.
    """
    return parse_gpu_snapshot(get_setting(session, GPU_SNAPSHOT_KEY, ""))


SLURM_PARTITIONS_KEY = "slurm_partitions"  # written by a Slurm worker (engine.executors.slurm_worker)


def slurm_partitions(session: Session) -> list[dict[str, Any]]:
    """The cluster's partitions as the Slurm worker last saw them (`sinfo`): name, nodes, idle and
    total GPUs, node states. Empty without a Slurm worker."""
    try:
        data = json.loads(get_setting(session, SLURM_PARTITIONS_KEY, "") or "{}")
    except ValueError:
        return []
    parts = data.get("partitions") if isinstance(data, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


# ----------------------------------------------------------------------------- paged job lists (the TUI)

# Sort orders a job list can take; each ends with `id` so pages never overlap or skip a row.
JOB_SORTS = ("newest", "oldest", "queue", "status", "experiment", "kind", "name")

# Status order for the "status" sort: what needs attention first, finished work last.
_STATUS_RANK = {"running": 0, "queued": 1, "failed": 2, "interrupted": 3, "cancelled": 4, "skipped": 5, "succeeded": 6}


def _job_filters(q, experiment: str | None, statuses: Sequence[str], kinds: Sequence[str], text: str | None):  # noqa: ANN001, ANN202
    if experiment:
        q = q.where(Experiment.name == experiment)
    if statuses:
        q = q.where(Job.status.in_(list(statuses)))
    if kinds:
        q = q.where(Job.kind.in_(list(kinds)))
    if text:
        like = f"%{text}%"
        q = q.where(or_(Job.name.like(like), Experiment.name.like(like), Job.kind.like(like), Job.status.like(like)))
    return q


def _job_order(sort: str) -> list[Any]:
    from sqlalchemy import case

    if sort == "newest":
        return [Job.id.desc()]
    if sort == "oldest":
        return [Job.id.asc()]
    if sort == "queue":  # the order the worker starts queued jobs: priority, then oldest first
        return [Job.priority.desc(), Job.id.asc()]
    if sort == "status":
        return [case(_STATUS_RANK, value=Job.status, else_=9), Job.id.desc()]
    if sort == "experiment":
        return [Experiment.name.asc(), Job.id.desc()]
    if sort == "kind":
        return [Job.kind.asc(), Job.id.desc()]
    if sort == "name":
        return [Job.name.asc(), Job.id.desc()]
    raise ValueError(f"sort: {sort!r} is not one of {', '.join(JOB_SORTS)}")


def page_jobs(
    session: Session,
    *,
    experiment: str | None = None,
    statuses: Sequence[str] = (),
    kinds: Sequence[str] = (),
    text: str | None = None,
    sort: str = "newest",
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[JobRow], int]:
    """One page of the jobs matching the filters, in `sort` order, and how many match in all.

    Offset paging rather than keyset: any sort order works, page numbers are exact, and a deep
    page costs a walk along an index (a few milliseconds at 100,000 jobs), not a full scan.
    """
    base = select(*_ROW_COLUMNS).join(Experiment, Experiment.id == Job.experiment_id)
    q = _job_filters(base, experiment, statuses, kinds, text).order_by(*_job_order(sort))
    rows = [_row(r) for r in session.execute(q.offset(max(0, offset)).limit(limit)).all()]
    if experiment or text:
        cq = _job_filters(
            select(func.count()).select_from(Job).join(Experiment, Experiment.id == Job.experiment_id),
            experiment, statuses, kinds, text,
        )
    else:  # no join needed: count from the status/kind indexes alone
        cq = select(func.count()).select_from(Job)
        if statuses:
            cq = cq.where(Job.status.in_(list(statuses)))
        if kinds:
            cq = cq.where(Job.kind.in_(list(kinds)))
    total = int(session.execute(cq).scalar_one())
    return rows, total


def experiment_names(session: Session) -> list[str]:
    """Every experiment's name, newest first (no job counts: cheap at any size)."""
    return list(session.execute(select(Experiment.name).order_by(Experiment.id.desc())).scalars())


def experiment_metric_names(session: Session, experiment: str, summaries_only: bool = False) -> list[str]:
    """The metric names any job of `experiment` reported, sorted; with `summaries_only`, only those
    reported without a step (a job's final score, what a results table usually shows)."""
    q = (
        select(Metric.name)
        .join(Job, Job.id == Metric.job_id)
        .join(Experiment, Experiment.id == Job.experiment_id)
        .where(Experiment.name == experiment)
    )
    if summaries_only:
        q = q.where(Metric.step.is_(None))
    return list(session.execute(q.distinct().order_by(Metric.name)).scalars())


def job_specs(session: Session, job_ids: Sequence[int]) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, name, spec) of these jobs, in the order given; unknown ids are left out."""
    if not job_ids:
        return []
    rows = {i: (i, n, json.loads(s)) for i, n, s in session.execute(
        select(Job.id, Job.name, Job.spec).where(Job.id.in_(list(job_ids)))
    ).all()}
    return [rows[i] for i in job_ids if i in rows]


def recent_specs(session: Session, limit: int = 300) -> list[dict[str, Any]]:
    """The specs of the newest jobs: what the New-job form suggests model and dataset paths from."""
    return [json.loads(s) for s in session.execute(select(Job.spec).order_by(Job.id.desc()).limit(limit)).scalars()]


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _experiment_metric_family(session: Session, exp_id: int, pattern: str, reduce: str) -> list[ResultRow]:
    prefix, _, suffix = pattern.partition("*")
    like = _like_literal(prefix) + "%" + _like_literal(suffix)
    values = _reduced_metrics(session, exp_id, Metric.name.like(like, escape="\\"), reduce)
    by_job: dict[int, list[tuple[str, float | None]]] = {}
    for (job_id, name), v in sorted(values.items()):
        if len(name) >= len(prefix) + len(suffix):  # LIKE's '%' may also match an overlap of prefix and suffix
            by_job.setdefault(job_id, []).append((name, v))
    out = []
    for job in _experiment_jobs(session, exp_id):
        matches = by_job.get(job[0], [])
        if not matches:
            out.append(_result_row(job, None))
        for metric_name, v in matches:
            group = metric_name[len(prefix): len(metric_name) - len(suffix)]
            out.append(_result_row(job, v, {GROUP_PARAM: group, "metric": metric_name}))
    return out
