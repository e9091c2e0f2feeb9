"""A real single-node Slurm for the tests in this folder, started once per session.

These tests never skip: `make test` installs slurm-wlm and munge first (`.ci/slurm-deps`), and a
missing tool is a failure that says what to install.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from slurm_cluster import LocalSlurm, missing_tools

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))  # worker_helpers


@pytest.fixture(scope="session")
def slurm() -> Iterator[LocalSlurm]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"Slurm tools missing: {', '.join(missing)}; run `bash .ci/slurm-deps` (apt-get slurm-wlm munge)")
    root = Path(tempfile.mkdtemp(prefix="labdeck-slurm-"))
    cluster = LocalSlurm(root, partitions=("debug", "other"))
    saved = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = str(cluster.conf)  # the worker and its sbatch/squeue find this cluster
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.stop()


@pytest.fixture
def cluster(slurm: LocalSlurm) -> Iterator[LocalSlurm]:
    """The session's cluster, with the node back to idle and no job left after each test."""
    yield slurm
    slurm.run("scancel", "--user", str(os.getuid()), check=False)
    if "slurmctld" not in slurm.procs or slurm.procs["slurmctld"].poll() is not None:
        slurm.start_ctld()
    slurm.run("scontrol", "update", f"nodename={slurm.host}", "state=resume", check=False)
    slurm.wait_idle(60)


@pytest.fixture(autouse=True)
def no_stray_workers(tmp_path: Path) -> Iterator[None]:
    """Workers a test started under its tmp folder are killed afterwards (Slurm's jobs by the cluster fixture)."""
    yield
    root, me = str(tmp_path), os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            cmd = " ".join(p.cmdline())
        except (psutil.Error, OSError):
            continue
        if root in cmd and "engine." in cmd and "slurm" in cmd:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
