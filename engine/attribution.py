"""Which job a process on a GPU belongs to, and the per-GPU view the scheduler plans with.

NVML lists the processes on each card; the worker must tell its own jobs' processes (whose memory
is already accounted for by their share) from a stranger's (which makes a card "foreign"). A
process is a job's when its session or process group is led by the job's launcher, or, for a
process that left the session, when its environment names the job and its run folder.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

from engine import scheduler
from engine.events import ENV_JOB_ID, ENV_RUN_DIR
from engine.gpus import Gpu, Inventory, classify

log = logging.getLogger("labdeck.worker")


def job_of_pid(pid: int, by_leader: Mapping[int, int], run_dirs: Mapping[int, Path]) -> int | None:
    """The job a GPU process belongs to; `by_leader` maps launcher pids to job ids, `run_dirs` job ids to folders."""
    try:
        sid = os.getsid(pid)
        if sid in by_leader:
            return by_leader[sid]
        pgid = os.getpgid(pid)
        if pgid in by_leader:
            return by_leader[pgid]
    except (ProcessLookupError, PermissionError):
        return None
    try:
        env = psutil.Process(pid).environ()
        jid = int(env.get(ENV_JOB_ID, ""))
        if jid in run_dirs and env.get(ENV_RUN_DIR) == str(run_dirs[jid]):
            return jid
    except (psutil.Error, ValueError, OSError):
        pass
    return None


def gpu_views(gpus: list[Gpu]) -> list[scheduler.GpuView]:
    """Per card: its memory, whether a stranger uses it, and how much each of our jobs holds."""
    views = []
    for g in gpus:
        ours: dict[int, float] = {}
        foreign = False
        for p in g.processes:
            if p.job_id is None:
                foreign = True
            else:
                ours[p.job_id] = ours.get(p.job_id, 0.0) + p.mem_mb
        views.append(scheduler.GpuView(g.index, g.mem_total_mb, g.mem_used_mb, foreign, ours))
    return views


class GpuWatch:
    """The inventory read at most every `max_age_s`, each process marked with its job (or None)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._cache: tuple[float, list[Gpu]] = (0.0, [])

    def read(self, running: Iterable[Any], max_age_s: float = 1.0) -> list[Gpu]:
        """`running`: the worker's watch records (`job_id`, `pid` of the launcher, `run_dir`)."""
        t, gpus = self._cache
        if time.monotonic() - t <= max_age_s:
            return gpus
        try:
            gpus = self.inventory.read()
        except Exception:  # noqa: BLE001 - NVML hiccup: treat as no information this round
            log.warning("GPU inventory failed:\n%s", traceback.format_exc())
            gpus = []
        jobs = list(running)
        by_leader = {r.pid: r.job_id for r in jobs if r.pid}
        run_dirs = {r.job_id: r.run_dir for r in jobs}
        gpus = classify(gpus, by_leader, lambda pid: job_of_pid(pid, by_leader, run_dirs))
        self._cache = (time.monotonic(), gpus)
        return gpus
