"""Pilot mode: a local worker started inside a Slurm allocation (salloc, or an sbatch script) uses
only the allocation's GPUs and CPUs. Checked for real: the worker's own choices, made by a process
`srun` started in an allocation of one CPU and one of the cluster's two GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from worker_helpers import REPO, child_env

from engine.daemon import allocated_gpus, cpu_slots

PROBE = """
import json, os
from engine.daemon import allocated_gpus, cpu_slots
print(json.dumps({"gpus": sorted(allocated_gpus() or []), "slots": cpu_slots(None),
                  "affinity": len(os.sched_getaffinity(0))}))
"""


def test_allocated_gpus_from_the_slurm_environment() -> None:
    assert allocated_gpus({"SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}) == frozenset({2, 3})
    assert allocated_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == frozenset({1})
    assert allocated_gpus({"CUDA_VISIBLE_DEVICES": "GPU-1f2e,GPU-77aa"}) is None  # UUIDs: no index to restrict to
    assert allocated_gpus({}) is None
    assert cpu_slots(None) == len(os.sched_getaffinity(0))


def test_inside_an_allocation_the_worker_sees_only_what_slurm_gave(cluster, tmp_path: Path) -> None:
    # The test cluster's task/none does not pin CPUs; taskset stands in for a cgroup cpuset.
    p = subprocess.run(["srun", "--quiet", "-n1", "-c1", "--gres=gpu:1", "taskset", "-c", "0",
                        sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd=REPO,
                       env=child_env(SLURM_CONF=os.environ["SLURM_CONF"]))
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(seen["gpus"]) == 1 and seen["slots"] == seen["affinity"] == 1, seen
