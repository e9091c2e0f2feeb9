"""Housekeeping of whole experiments: archive and restore, and what deleting one would remove.

An archived experiment keeps its rows and run folders untouched; it is only left out of the lists a
person reads by default (the experiments screen, `labdeck experiments`, the jobs screen, `labdeck
ls`), as MLflow's archived experiments are. Archiving is refused while the experiment has queued or
running jobs: a job no list shows would still hold GPUs and end unseen. New work restores it
(`db.queue.bring_back`: a submit or a retry into an archived experiment).

Deleting an experiment removes every job of it with its rows and run folders (`db.removal`), and is
refused while one of them is live; `deletion_plan` says what would go, for the confirmation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlmodel import Session

from db.home import run_dir, runs_root
from db.models import Experiment, Job
from db.queue import IllegalTransition
from db.schema import LIVE_STATUSES


class UnknownExperiment(LookupError):
    """No experiment has this name."""


def experiment_id(session: Session, name: str) -> int:
    found = session.execute(select(Experiment.id).where(Experiment.name == name)).scalar_one_or_none()
    if found is None:
        raise UnknownExperiment(f"experiment {name!r}: no such experiment")
    return int(found)


def live_jobs(session: Session, exp_id: int) -> list[tuple[int, str]]:
    """(id, status) of the experiment's queued and running jobs, oldest first."""
    rows = session.execute(select(Job.id, Job.status).where(Job.experiment_id == exp_id,
                                                            Job.status.in_(LIVE_STATUSES)).order_by(Job.id)).all()
    return [(int(i), getattr(s, "value", s)) for i, s in rows]


def live_text(name: str, live: Sequence[tuple[int, str]], doing: str) -> str:
    """One line: which jobs keep `doing` from happening (`running 12, queued 13 14`), and what to do."""
    parts = []
    for status in ("running", "queued"):
        ids = [str(i) for i, s in live if s == status]
        if ids:
            shown = " ".join(ids[:8]) + (f" (+{len(ids) - 8} more)" if len(ids) > 8 else "")
            parts.append(f"{status} {shown}")
    n = len(live)
    return (f"experiment {name!r}: {n} job{'s' if n != 1 else ''} still live ({', '.join(parts)}); "
            f"cancel {'them' if n != 1 else 'it'} or let {'them' if n != 1 else 'it'} finish before {doing}")


def archive(session: Session, names: Sequence[str], restore: bool = False, now: float | None = None
            ) -> list[tuple[str, bool]]:
    """Archive (or restore) experiments: (name, whether it changed) each, all or none.

    Unknown names raise `UnknownExperiment`, an experiment with live jobs `IllegalTransition`
    (checked for every name before anything is written)."""
    ids = {n: experiment_id(session, n) for n in dict.fromkeys(names)}
    if not restore:
        for name, eid in ids.items():
            live = live_jobs(session, eid)
            if live:
                raise IllegalTransition(live_text(name, live, "archiving it"))
    when = None if restore else (now if now is not None else time.time())
    out = []
    for name, eid in ids.items():
        cond = Experiment.archived_at.is_not(None) if restore else Experiment.archived_at.is_(None)
        changed = session.execute(update(Experiment).where(Experiment.id == eid, cond).values(archived_at=when))
        out.append((name, bool(changed.rowcount)))  # type: ignore[attr-defined]
    return out


# ----------------------------------------------------------------------------- run folders


def _roots(home: Path) -> set[str]:
    return {os.path.realpath(home / "runs"), os.path.realpath(runs_root(home))}


def job_folders(session: Session, home: Path, job_ids: Sequence[int]) -> dict[int, list[Path]]:
    """Each job's run folder(s) that labdeck may remove: `<runs root>/<id>` as the home places it now,
    and the folder the job recorded if that too is `<id>` directly inside the home's runs folder or
    its runs_dir (moved since). A recorded path anywhere else is never touched; links are checked
    when the folder is moved (`db.removal`)."""
    roots = _roots(home)
    recorded: dict[int, str] = dict(session.execute(select(Job.id, Job.run_dir).where(Job.id.in_(list(job_ids)))).all())
    out: dict[int, list[Path]] = {}
    for i in sorted(set(job_ids)):
        found = [run_dir(home, i)]
        r = recorded.get(i) or ""
        if r:
            p = Path(r)
            if p.name == str(i) and os.path.realpath(p.parent) in roots and p not in found:
                found.append(p)
        out[i] = found
    return out


@dataclass(frozen=True)
class ExperimentDeletion:
    """What deleting an experiment removes: its jobs and their run folders; `live` blocks it."""

    name: str
    job_ids: tuple[int, ...]
    live: tuple[tuple[int, str], ...]
    folders: tuple[Path, ...]

    @property
    def refusal(self) -> str | None:
        return live_text(self.name, self.live, "deleting the experiment") if self.live else None


def deletion_plan(session: Session, home: Path, name: str) -> ExperimentDeletion:
    eid = experiment_id(session, name)
    ids = [int(i) for i in session.execute(select(Job.id).where(Job.experiment_id == eid).order_by(Job.id)).scalars()]
    folders = [f for fs in job_folders(session, home, ids).values() for f in fs]
    return ExperimentDeletion(name, tuple(ids), tuple(live_jobs(session, eid)), tuple(folders))


@dataclass(frozen=True)
class RunFolder:
    """One job's run folder, for `labdeck du --runs` and the job detail's disk line."""

    id: int
    name: str
    status: str
    run_dir: str


def run_folders_of(session: Session, experiments: Sequence[str]) -> dict[str, list[RunFolder]]:
    """{experiment: its jobs' run folders, oldest job first} (jobs not started yet have none)."""
    rows = session.execute(
        select(Experiment.name, Job.id, Job.name, Job.status, Job.run_dir).join(Job, Job.experiment_id == Experiment.id)
        .where(Experiment.name.in_(list(experiments))).order_by(Job.id)
    ).all()
    out: dict[str, list[RunFolder]] = {e: [] for e in experiments}
    for exp, jid, name, status, folder in rows:
        if folder:
            out[exp].append(RunFolder(int(jid), name, getattr(status, "value", status), folder))
    return out
