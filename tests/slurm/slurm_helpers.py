"""Helpers for the Slurm tests: a Slurm worker in a thread or as a real process, job rows."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from worker_helpers import REPO, child_env

from engine.executors.slurm import Defaults
from engine.executors.slurm_worker import SlurmConfig, SlurmWorker
from engine.worker import Config

FAST = {"poll_s": 0.05, "heartbeat_s": 0.5, "kill_grace_s": 1.0}


class ThreadSlurmWorker:
    """A Slurm worker in a thread of the test process (fast to start; `daemon.client.calls` is inspectable)."""

    def __init__(self, home: Path, slurm_poll_s: float = 0.3, **slurm: Any) -> None:
        defaults = Defaults(**{k: slurm.pop(k) for k in ("partition", "account", "qos", "sbatch_args") if k in slurm})
        self.daemon = SlurmWorker(Config(home=home, **FAST),
                                  SlurmConfig(defaults=defaults, slurm_poll_s=slurm_poll_s, exit_wait_s=5.0, **slurm))
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.run(until=self._stop.is_set)
        except BaseException as e:  # noqa: BLE001 - surfaced by stop()
            self.error = e

    def __enter__(self) -> ThreadSlurmWorker:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)
        if self.error is not None:
            raise self.error


def start_process_worker(home: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`python -m engine.daemon --executor slurm` in the foreground, as a real process we can kill -9."""
    log = open(home / "test-worker.log", "ab")  # noqa: SIM115 - the worker owns it
    try:
        return subprocess.Popen([sys.executable, "-m", "engine.daemon", "--executor", "slurm", "--home", str(home),
                                 "--poll", "0.05", "--heartbeat", "0.5", "--slurm-poll", "0.3", *extra],
                                cwd=REPO, env=child_env(SLURM_CONF=os.environ["SLURM_CONF"]), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()
