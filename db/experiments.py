"""Experiment-level reads: the view an experiment's results open on.

A pipeline's last stage reports what the study is about (the judge's `win_rate`, the calibration
scorer's `ece`), and its matrix axes are the table's rows and columns (students x teachers). The
app and `labdeck demo` open the results there instead of on whichever metric sorts first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from db.models import Experiment, Job, Metric
from db.rows import ExperimentRow  # noqa: F401 - re-exported: the experiments list's row

# The metrics a study reports as its outcome, best first; a stage reporting one of these is
# shown on it. Anything else a stage reports comes before bookkeeping (counts, spreads, lengths).
MAIN_METRICS = ("win_rate", "lc_win_rate", "accuracy", "auroc", "ece", "asr", "max_asr", "car", "reward",
                "eval_loss", "loss")
BOOKKEEPING = ("records", "finished_fraction", "mean_response_tokens")
BOOKKEEPING_SUFFIXES = ("_std", "_missing", "_tokens", "_length", "length")
NOT_AXES = ("stage", "seed")


@dataclass(frozen=True)
class MainView:
    """Where an experiment's results open: a metric, its stage, and the pivot's rows and columns."""

    metric: str | None
    stage: str | None
    rows: str | None
    cols: str | None


def pick_metric(names: list[str]) -> str | None:
    """The outcome among the summary metrics one stage reported (see MAIN_METRICS)."""
    for preferred in MAIN_METRICS:
        if preferred in names:
            return preferred
    plain = [n for n in names if n not in BOOKKEEPING and not n.endswith(BOOKKEEPING_SUFFIXES)]
    pool = plain or sorted(names)
    return pool[0] if pool else None


def pick_axes(params: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """Rows and columns from the parameters that vary between jobs: the axis with the fewest values
    as rows, the one with the most as columns (students x teachers; methods x models); a third axis
    joins the rows. Seeds are pooled (mean ± std), never an axis."""
    values: dict[str, set[str]] = {}
    for p in params:
        for k, v in p.items():
            if k not in NOT_AXES:
                values.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    axes = [k for k, v in values.items() if len(v) > 1]
    if not axes:
        return None, None
    if len(axes) == 1:
        return axes[0], None
    order = sorted(axes, key=lambda k: (len(values[k]), -axes.index(k)))
    cols = order[-1]
    rows = ",".join(order[:-1])
    return rows, cols


def main_view(session: Session, experiment: str) -> MainView:
    """The metric of the last stage that reported a summary metric (no step), with its axes."""
    exp_id = session.execute(select(Experiment.id).where(Experiment.name == experiment)).scalar_one_or_none()
    if exp_id is None:
        return MainView(None, None, None, None)
    stage_col = func.json_extract(Job.params, "$.stage")
    reported = session.execute(
        select(stage_col, Metric.name)
        .join(Job, Job.id == Metric.job_id)
        .where(Job.experiment_id == exp_id, Metric.step.is_(None))
        .group_by(stage_col, Metric.name)
    ).all()
    if not reported:
        return MainView(None, None, None, None)
    names: dict[Any, list[str]] = {}
    for stage, name in reported:
        names.setdefault(stage, []).append(name)
    # stage order is the order their first jobs were queued in (a pipeline queues stage by stage)
    first_job = dict(session.execute(
        select(stage_col, func.min(Job.id)).where(Job.experiment_id == exp_id).group_by(stage_col)
    ).all())
    stage = max(names, key=lambda s: first_job.get(s, 0))
    metric = pick_metric(sorted(names[stage]))
    q = select(Job.params).where(Job.experiment_id == exp_id)
    if stage is not None:
        q = q.where(stage_col == stage)
    params = [json.loads(p or "{}") for p in session.execute(q).scalars()]
    rows, cols = pick_axes(params)
    return MainView(metric, stage, rows, cols)


# ----------------------------------------------------------------------------- the experiments list

def experiment_rows(
    session: Session, *, text: str | None = None, statuses: tuple[str, ...] = (),
    offset: int = 0, limit: int = 100, archived: bool | None = False,
) -> tuple[list[ExperimentRow], int]:
    """A page of experiments, most recently active first (`db.experiment_reads`: the same SQL the
    app's cold first paint and `labdeck experiments` run, here on the session's connection)."""
    from db import experiment_reads

    return experiment_reads.experiment_rows(session, text=text, statuses=statuses, offset=offset, limit=limit,
                                            archived=archived)


def folder_bytes(path: str) -> int:
    """Bytes of the files in a run folder (apparent size, as `du --apparent-size`), 0 if it is gone."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += st.st_size
        except OSError:
            continue
    return total


def run_dirs(session: Session, experiments: list[str]) -> dict[str, list[str]]:
    """{experiment: its jobs' run folders}: what the disk column adds up (off the SQL path: it walks files)."""
    rows = session.execute(
        select(Experiment.name, Job.run_dir).join(Job, Job.experiment_id == Experiment.id)
        .where(Experiment.name.in_(experiments), Job.run_dir != "")
    ).all()
    out: dict[str, list[str]] = {e: [] for e in experiments}
    for name, folder in rows:
        out[name].append(folder)
    return out


# ----------------------------------------------------------------------------- one experiment's pipeline


@dataclass(frozen=True)
class StageJob:
    id: int
    name: str
    status: str
    fraction: float | None
    point: dict[str, str]  # the matrix values this job runs at (its axes only)


@dataclass(frozen=True)
class Pipeline:
    """An experiment's jobs by stage (rows, in queue order) and matrix point (columns).

    `axes` are the parameters that vary between the experiment's jobs (a plain sweep is one
    stage, `None`); `points` every combination that occurs; `needs` which stages each waits on.
    """

    experiment: str
    description: str
    stages: list[str | None]
    axes: list[str]
    points: list[tuple[str, ...]]
    jobs: dict[str | None, list[StageJob]]
    needs: dict[str | None, list[str | None]]

    def cell(self, stage: str | None, point: tuple[str, ...]) -> list[StageJob]:
        """The jobs of `stage` at `point`: a stage over fewer axes shows its job under every point it feeds."""
        want = dict(zip(self.axes, point, strict=True))
        return [j for j in self.jobs.get(stage, []) if all(want.get(a) == v for a, v in j.point.items())]


def _label(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def pipeline(session: Session, experiment: str) -> Pipeline | None:
    """The pipeline view of `experiment` (None if there is no such experiment).

    Only the newest attempt of each job shows (a retry replaces its failed original in the grid).
    """
    from db.models import JobDependency

    exp = session.execute(select(Experiment.id, Experiment.description).where(Experiment.name == experiment)).first()
    if exp is None:
        return None
    exp_id, description = exp
    raw = session.execute(
        select(Job.id, Job.name, Job.status, Job.params, Job.progress_done, Job.progress_total, Job.parent_id)
        .where(Job.experiment_id == exp_id).order_by(Job.id)
    ).all()
    replaced = {r[6] for r in raw if r[6] is not None}
    params = {r[0]: json.loads(r[3] or "{}") for r in raw}
    values: dict[str, set[str]] = {}
    for p in params.values():
        for k, v in p.items():
            if k != "stage":
                values.setdefault(k, set()).add(_label(v))
    axes = [k for k, v in values.items() if len(v) > 1]
    stages: list[str | None] = []
    jobs: dict[str | None, list[StageJob]] = {}
    stage_of: dict[int, str | None] = {}
    for jid, name, status, _p, done, total, _parent in raw:
        stage = params[jid].get("stage")
        stage_of[jid] = stage
        if stage not in jobs:
            stages.append(stage)
            jobs[stage] = []
        if jid in replaced:
            continue
        st = getattr(status, "value", status)
        frac = max(0.0, min(1.0, done / total)) if total and done is not None else None
        point = {a: _label(params[jid][a]) for a in axes if a in params[jid]}
        jobs[stage].append(StageJob(jid, name, st, frac, point))
    points = sorted({tuple(j.point.get(a, "") for a in axes) for js in jobs.values() for j in js
                     if len(j.point) == len(axes)})
    if not points:
        points = [tuple("" for _ in axes)]
    ids = list(stage_of)
    needs: dict[str | None, list[str | None]] = {s: [] for s in stages}
    if ids:
        for jid, dep in session.execute(
            select(JobDependency.job_id, JobDependency.depends_on_id)
            .where(JobDependency.job_id.in_(select(Job.id).where(Job.experiment_id == exp_id)))
        ).all():
            a, b = stage_of.get(jid), stage_of.get(dep)
            if dep in stage_of and a != b and b not in needs[a]:
                needs[a].append(b)
    for s in needs:
        needs[s].sort(key=stages.index)
    return Pipeline(experiment, description or "", stages, axes, points, jobs, needs)


def describe(session: Session, experiment: str, description: str) -> None:
    """Give an experiment the description its spec file carries, unless it already has one."""
    from sqlalchemy import update

    if description:
        session.execute(update(Experiment).where(Experiment.name == experiment, Experiment.description == "")
                        .values(description=description))


@dataclass(frozen=True)
class Linked:
    id: int
    name: str
    status: str


def lineage(session: Session, job_id: int) -> tuple[list[Linked], list[Linked]]:
    """(the jobs `job_id` read from, the jobs that read its outputs): its dependencies both ways."""
    from db.models import JobDependency

    def linked(where: Any, other: Any) -> list[Linked]:
        rows = session.execute(
            select(Job.id, Job.name, Job.status).join(JobDependency, other == Job.id).where(where).order_by(Job.id)
        ).all()
        return [Linked(i, n, getattr(s, "value", s)) for i, n, s in rows]

    return (linked(JobDependency.job_id == job_id, JobDependency.depends_on_id),
            linked(JobDependency.depends_on_id == job_id, JobDependency.job_id))
