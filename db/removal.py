"""Delete finished jobs together with their run folders (`labdeck rm`, the app's delete key).

The rows go in one transaction (`db.queue.delete_jobs`); each run folder is renamed aside inside
that transaction and renamed back if it fails, so a refused or failed delete leaves rows and
folders exactly as they were. The slow recursive removal runs after the commit.
"""

from __future__ import annotations

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


def delete_runs(store: Store, job_ids: Sequence[int]) -> list[int]:
    """Delete the jobs' rows and folders, or nothing (`IllegalTransition` / `UnknownJob` say why)."""
    moved: list[tuple[Path, Path]] = []
    try:
        with store.write() as s:
            ids = delete_jobs(s, job_ids)
            for d in run_folders(store, ids):
                if d.is_dir():
                    aside = d.with_name(f".deleted-{d.name}")
                    d.rename(aside)
                    moved.append((d, aside))
    except BaseException:
        for d, aside in moved:
            aside.rename(d)
        raise
    for _, aside in moved:
        shutil.rmtree(aside, ignore_errors=True)
    return ids
