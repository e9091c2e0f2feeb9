"""A job's run folder and the environment its processes start with, written before it starts.

`prepare_run_dir` lays out `runs/<id>/` (spec, an empty events file and log, outputs/), private to
the user; `job_env` is the worker's environment plus where to report, which GPUs, and a thread cap
for CPU-only jobs. Both are executor-independent: whichever executor starts the job finds the same
folder and environment.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from db.home import run_dir as run_dir_of
from engine.events import ENV_EVENTS, ENV_JOB_ID, ENV_RUN_DIR, EVENTS_FILE
from engine.launcher import LOG_FILE, SPEC_FILE

ENV_GPU_MEM_MB = "LABDECK_GPU_MEM_MB"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a cgroup cpuset or `taskset`)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_job_threads(slots: int | None, cpus: int | None = None) -> int | None:
    """Threads for each CPU-only job: the CPUs shared out among the CPU slots, at least 1.

    torch (OpenMP/MKL) otherwise starts one thread per core in every job, and two CPU jobs on two
    cores then fight over them (the tiny ExPO recipe on a quiet 2-core box: 72 s, 38 s with the
    cap). None when the slots are unlimited: nothing to share out.
    """
    if not slots:
        return None
    return max(1, (cpus if cpus is not None else usable_cpus()) // slots)


def job_env(base: dict[str, str], job_id: int, run_dir: Path, gpus: tuple[int, ...], share_mb: float,
            cpu_threads: int | None = None) -> dict[str, str]:
    """The environment a job starts with: the worker's own, plus where to report and which GPUs.

    A CPU-only job also gets OMP_NUM_THREADS and MKL_NUM_THREADS = `cpu_threads`, unless the
    worker's environment sets them (a command job's own `env` is applied later by the launcher and
    wins over both).
    """
    env = dict(base)
    if not gpus and cpu_threads:
        for var in THREAD_VARS:
            env.setdefault(var, str(cpu_threads))
    env.update({
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),  # "" hides every GPU from a CPU job
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA numbers cards as NVML does
        ENV_EVENTS: str(run_dir / EVENTS_FILE),
        ENV_RUN_DIR: str(run_dir),
        ENV_JOB_ID: str(job_id),
        "PYTHONUNBUFFERED": "1",
    })
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if share_mb > 0:
        env[ENV_GPU_MEM_MB] = str(int(share_mb))
    else:
        env.pop(ENV_GPU_MEM_MB, None)
    return env


def _private_file(path: Path, content: bytes = b"") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if content:
            os.write(fd, content)
    finally:
        os.close(fd)


def prepare_run_dir(home: Path, job_id: int, spec: dict[str, Any] | str) -> Path:
    """Create `runs/<id>/` (0700) with spec.json, an empty events.jsonl and log.txt, and outputs/.

    A folder left by an earlier database with the same job id is moved aside, never mixed in.
    """
    rd = run_dir_of(home, job_id)
    if rd.exists() and any(rd.iterdir()):
        rd.rename(rd.with_name(f"{job_id}.old-{int(time.time() * 1000)}"))
    rd.mkdir(mode=0o700, parents=True, exist_ok=True)
    if isinstance(spec, str):
        spec = json.loads(spec)
    _private_file(rd / SPEC_FILE, (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode())
    _private_file(rd / EVENTS_FILE)
    _private_file(rd / LOG_FILE)
    (rd / "outputs").mkdir(mode=0o700, exist_ok=True)
    return rd
