from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest


@pytest.fixture(autouse=True)
def no_stray_processes(tmp_path: Path):
    """Whatever a fault test started under its folder (jobs, workers) is killed afterwards."""
    yield
    root = str(tmp_path)
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            env = p.environ()
            cmd = " ".join(p.cmdline())
        except (psutil.Error, OSError):
            continue
        if env.get("LABDECK_RUN_DIR", "").startswith(root) or (root in cmd and "engine.worker" in cmd):
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
