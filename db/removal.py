"""Delete finished jobs, or a whole experiment, together with their run folders (`labdeck rm`, the app's delete keys).

The rows go in one transaction (`db.queue.delete_jobs`); each run folder is renamed aside (`runs/.deleted-<id>-<random>`) inside that transaction and renamed back
if it fails, so a refused or failed delete leaves rows and folders exactly as they were. The slow
recursive removal runs after the commit; one that was interrupted (kill, a read-only folder a job
made) is finished by the next `rm` and by the worker when it starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from db.home import run_dir, runs_root
from db.housekeeping import deletion_plan, job_folders
from db.models import Experiment
from db.queue import IllegalTransition, delete_jobs
from db.session import Store


def run_folders(store: Store, job_ids: Sequence[int]) -> list[Path]:
    return [run_dir(store.home, i) for i in sorted(set(job_ids))]


def folder_bytes(folders: Sequence[Path]) -> int:
    """Disk used by the folders (regular files only; links are not followed)."""
    return sum(f.stat().st_size for d in folders if d.is_dir() for f in d.rglob("*") if f.is_file() and not f.is_symlink())


def remove_tree(path: Path) -> None:
    """rmtree that also clears folders a job made read-only (a plain rmtree would leave them behind)."""
    def fix(func, p, _exc) -> None:  # noqa: ANN001 - shutil's onerror signature
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def sweep_deleted(home: Path) -> int:
    """Remove run folders an interrupted `rm` left renamed aside (`.deleted-*` in the home's runs
    folder and its runs_dir); returns how many."""
    n = 0
    for root in dict.fromkeys((home / "runs", runs_root(home))):
        for aside in root.glob(".deleted-*"):
            if aside.is_dir() and not aside.is_symlink():
                remove_tree(aside)
                n += not aside.exists()
    return n


def move_aside(folder: Path, moved: list[tuple[Path, Path]], root: Path | None = None, tag: str = "") -> None:
    """Rename `folder` to `.deleted-<tag>-<random>` in `root` (default: beside it; a runs folder, where
    `sweep_deleted` finishes an interrupted removal), recording the move in `moved` so the caller can
    put it back. A file moves too (a model saved as one file); a link is left alone."""
    if (folder.is_dir() or folder.is_file()) and not folder.is_symlink():
        aside = (root or folder.parent) / f".deleted-{tag or folder.name}-{secrets.token_hex(4)}"
        folder.rename(aside)
        moved.append((folder, aside))


def _delete(store: Store, pick: Callable[[Any], list[int]]) -> list[int]:
    """Rows in one transaction, folders renamed aside inside it (renamed back if it fails), removed after."""
    moved: list[tuple[Path, Path]] = []
    try:
        with store.write() as s:
            ids = pick(s)
            for folders in job_folders(s, store.home, ids).values():
                for d in folders:
                    move_aside(d, moved)
    except BaseException:
        for d, aside in reversed(moved):
            aside.rename(d)
        raise
    for _, aside in moved:
        remove_tree(aside)
    sweep_deleted(store.home)  # and what an earlier, interrupted rm left
    return ids


def delete_runs(store: Store, job_ids: Sequence[int]) -> list[int]:
    """Delete the jobs' rows and folders, or nothing (`IllegalTransition` / `UnknownJob` say why)."""
    return _delete(store, lambda s: delete_jobs(s, job_ids))


def delete_experiment(store: Store, name: str) -> list[int]:
    """Delete an experiment with every job of it, their rows and run folders, or nothing: refused
    (`IllegalTransition`, naming the jobs) while one is queued or running; `UnknownExperiment`."""
    def pick(s: Any) -> list[int]:
        plan = deletion_plan(s, store.home, name)
        if plan.refusal:
            raise IllegalTransition(plan.refusal)
        if not plan.job_ids:
            s.execute(delete(Experiment).where(Experiment.name == name))
            return []
        return delete_jobs(s, plan.job_ids)

    return _delete(store, pick)
