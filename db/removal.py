"""Delete finished jobs together with their run folders (`labdeck rm`, the app's delete key).

The rows go in one transaction (`db.queue.delete_jobs`); each run folder is renamed aside (`runs/.deleted-<id>-<random>`) inside that transaction and renamed back
if it fails, so a refused or failed delete leaves rows and folders exactly as they were. The slow
recursive removal runs after the commit; one that was interrupted (kill, a read-only folder a job
made) is finished by the next `rm` and by the worker when it starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

from db.home import run_dir
from db.queue import delete_jobs
from db.session import Store


def run_folders(store: Store, job_ids: Sequence[int]) -> list[Path]:
    return [run_dir(store.home, i) for i in sorted(set(job_ids))]


def folder_bytes(folders: Sequence[Path]) -> int:
    """Disk used by the folders (regular files only; links are not followed)."""
    return sum(f.stat().st_size for d in folders if d.is_dir() for f in d.rglob("*") if f.is_file() and not f.is_symlink())


def _remove_tree(path: Path) -> None:
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
    """Remove run folders an interrupted `rm` left renamed aside (`runs/.deleted-*`); returns how many."""
    n = 0
    for aside in (home / "runs").glob(".deleted-*"):
        if aside.is_dir() and not aside.is_symlink():
            _remove_tree(aside)
            n += not aside.exists()
    return n


def delete_runs(store: Store, job_ids: Sequence[int]) -> list[int]:
    """Delete the jobs' rows and folders, or nothing (`IllegalTransition` / `UnknownJob` say why)."""
    moved: list[tuple[Path, Path]] = []
    try:
        with store.write() as s:
            ids = delete_jobs(s, job_ids)
            for d in run_folders(store, ids):
                if d.is_dir() and not d.is_symlink():
                    aside = d.with_name(f".deleted-{d.name}-{secrets.token_hex(4)}")
                    d.rename(aside)
                    moved.append((d, aside))
    except BaseException:
        for d, aside in moved:
            aside.rename(d)
        raise
    for _, aside in moved:
        _remove_tree(aside)
    sweep_deleted(store.home)  # and what an earlier, interrupted rm left
    return ids
