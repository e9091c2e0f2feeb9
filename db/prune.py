"""Keep the best N fine-tunes of an experiment by a metric; delete the weights of the others.

A sweep of 20 LoRA or full fine-tunes leaves 20 models and their resumable checkpoints on disk, of
which a study keeps the few that won. `labdeck prune EXP --keep-best N --metric M` (and the
experiments screen's `K`) ranks the experiment's succeeded `finetune` jobs by M and deletes, for
the others, the model artifacts they recorded (`outputs/model`) and their `checkpoints/` folder.
Rows stay: the job, its metrics and its artifact rows, marked `pruned_at` / `pruned_bytes` in the
artifact's meta, so `show` and the app say "pruned" instead of pointing at a missing folder.

* **Which value.** The metric's final value (its latest row, what `labdeck results --reduce last`
  shows), not its best step: the model a fine-tune saves is its final weights, so the final value is
  the one that describes what is kept; a best-step value would describe a checkpoint that may
  already be rotated away (`keep_last`).
* **Direction.** `mode` min or max; left out, it is inferred only for names that say it (`loss`,
  `ppl`, `ece`: lower; `accuracy`, `win_rate`, `auroc`, `reward`: higher), else refused.
* **Left alone.** Jobs without the metric (not ranked), jobs a queued or running job still reads
  (its model is that job's input), and any recorded path outside the job's run folder or reached
  through a link.
* **All or nothing.** The plan is made again inside the write transaction; the folders are renamed
  aside in it (renamed back if it fails) and removed after the commit (`db.removal`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from db.experiments import folder_bytes
from db.housekeeping import experiment_id, job_folders
from db.models import Artifact, Job, JobDependency
from db.reads import latest_metrics
from db.schema import LIVE_STATUSES

LOWER_BETTER = ("loss", "ppl", "perplexity", "ece", "error", "nll", "brier")
HIGHER_BETTER = ("accuracy", "acc", "win_rate", "auroc", "auc", "reward", "f1", "exact_match", "car", "bleu", "rouge")
CHECKPOINTS = "checkpoints"


class PruneError(ValueError):
    """A prune request that cannot be planned (bad N, unknown direction): one line."""


def guess_mode(metric: str) -> str | None:
    """min or max when the metric's name says which is better, else None."""
    words = metric.lower().replace("/", "_").replace("-", "_").split("_")
    if any(w in LOWER_BETTER for w in words):
        return "min"
    if any(w in HIGHER_BETTER for w in words) or metric.lower() in HIGHER_BETTER:
        return "max"
    return None


@dataclass(frozen=True)
class PruneItem:
    id: int
    name: str
    value: float | None
    paths: tuple[str, ...] = ()  # what would go (model folders, checkpoints)
    bytes: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "value": self.value, "paths": list(self.paths),
                "bytes": self.bytes, "note": self.note}


@dataclass(frozen=True)
class PrunePlan:
    experiment: str
    metric: str
    mode: str
    keep_best: int
    keep: list[PruneItem] = field(default_factory=list)
    prune: list[PruneItem] = field(default_factory=list)
    skipped: list[PruneItem] = field(default_factory=list)
    done: bool = False  # applied (False: a dry run)

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.prune)

    def as_dict(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "metric": self.metric, "mode": self.mode, "keep_best": self.keep_best,
                "keep": [i.as_dict() for i in self.keep], "prune": [i.as_dict() for i in self.prune],
                "skipped": [i.as_dict() for i in self.skipped], "bytes": self.bytes, "dry_run": not self.done}


def _inside(path: str, folder: Path) -> bool:
    """`path` is strictly inside `folder` once links are resolved (a link out of the folder is not)."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real.startswith(root + os.sep) and not os.path.islink(path)


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.isfile(path) else folder_bytes(path)


def _weights(session: Session, home: Path, job_id: int) -> tuple[list[str], list[int], Path | None]:
    """The job's model artifact folders and checkpoints folder that exist inside its run folder, the ids
    of the artifact rows among them, and the run folder."""
    folder = next((f for f in job_folders(session, home, [job_id])[job_id] if f.is_dir() and not f.is_symlink()), None)
    if folder is None:
        return [], [], None
    paths, rows = [], []
    for aid, path, meta in session.execute(select(Artifact.id, Artifact.path, Artifact.meta)
                                           .where(Artifact.job_id == job_id, Artifact.kind == "model")).all():
        if "pruned_at" in json.loads(meta or "{}") or not _inside(path, folder) or not os.path.exists(path):
            continue
        paths.append(path)
        rows.append(int(aid))
    ckpt = folder / CHECKPOINTS
    if ckpt.is_dir() and not ckpt.is_symlink():
        paths.append(str(ckpt))
    return paths, rows, folder


def plan_prune(session: Session, home: Path, experiment: str, keep_best: int, metric: str,
               mode: str | None = None) -> PrunePlan:
    """What keeping the best `keep_best` fine-tunes of `experiment` by `metric` would delete (nothing is)."""
    if keep_best < 1:
        raise PruneError(f"--keep-best: {keep_best}: keep at least one (to remove every run, use rm -e)")
    mode = mode or guess_mode(metric)
    if mode not in ("min", "max"):
        raise PruneError(f"--mode: say whether a lower (min) or a higher (max) {metric} is better")
    eid = experiment_id(session, experiment)
    jobs = session.execute(select(Job.id, Job.name).where(Job.experiment_id == eid, Job.kind == "finetune",
                                                          Job.status == "succeeded").order_by(Job.id)).all()
    values = latest_metrics(session, [j for j, _ in jobs])
    readers: dict[int, int] = dict(session.execute(
        select(JobDependency.depends_on_id, Job.id).join(Job, Job.id == JobDependency.job_id)
        .where(JobDependency.depends_on_id.in_([j for j, _ in jobs]), Job.status.in_(LIVE_STATUSES))).all())
    plan = PrunePlan(experiment, metric, mode, keep_best)
    ranked = []
    for jid, name in jobs:
        v = values.get(jid, {}).get(metric)
        if v is None:
            plan.skipped.append(PruneItem(jid, name, None, note=f"no {metric}: not ranked, kept"))
        else:
            ranked.append((v if mode == "min" else -v, jid, name, v))
    ranked.sort()
    for rank, (_key, jid, name, v) in enumerate(ranked):
        if rank < keep_best:
            plan.keep.append(PruneItem(jid, name, v))
        elif jid in readers:
            plan.skipped.append(PruneItem(jid, name, v, note=f"job {readers[jid]} (queued or running) reads its model"))
        else:
            paths, _rows, _folder = _weights(session, home, jid)
            if paths:
                plan.prune.append(PruneItem(jid, name, v, tuple(paths), sum(_size(p) for p in paths)))
            else:
                plan.skipped.append(PruneItem(jid, name, v, note="no weights left (pruned before)"))
    return plan


def apply_prune(store: Any, experiment: str, keep_best: int, metric: str, mode: str | None = None) -> PrunePlan:
    """Plan again inside one write transaction, mark the pruned artifacts and move the weights aside
    (put back if anything fails), then remove them after the commit."""
    from db.removal import move_aside, remove_tree

    moved: list[tuple[Path, Path]] = []
    try:
        with store.write() as s:
            plan = plan_prune(s, store.home, experiment, keep_best, metric, mode)
            now = time.time()
            for item in plan.prune:
                paths, rows, folder = _weights(s, store.home, item.id)
                assert folder is not None
                for p in paths:
                    move_aside(Path(p), moved, root=folder.parent, tag=f"{item.id}-{Path(p).name}")
                for aid in rows:
                    meta = json.loads(s.execute(select(Artifact.meta).where(Artifact.id == aid)).scalar_one() or "{}")
                    meta.update(pruned_at=now, pruned_bytes=item.bytes)
                    s.execute(update(Artifact).where(Artifact.id == aid).values(meta=json.dumps(meta)))
    except BaseException:
        for p, aside in reversed(moved):
            aside.rename(p)
        raise
    for _, aside in moved:
        if aside.is_dir():
            remove_tree(aside)
        else:
            aside.unlink()
    return replace(plan, done=True)
