"""Run a shipped recipe's scaled-down variant under a real worker, as a user would from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from db.models import TERMINAL_STATUSES
from db.queries import JobRow, list_jobs
from db.session import Store, open_store

CPU_SLOTS = "2"


def labdeck(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "cli", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@dataclass
class RecipeRun:
    home: Path
    store: Store
    jobs: list[JobRow]

    def stage(self, name: str) -> list[JobRow]:
        return [j for j in self.jobs if j.params.get("stage") == name]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return labdeck(self.home, *args)


def _why(home: Path, jobs: list[JobRow]) -> str:
    lines = []
    for j in jobs:
        if j.status != "succeeded":
            log = home / "runs" / str(j.id) / "log.txt"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
            lines.append(f"job {j.id} {j.name}: {j.status} ({j.failure_reason})\n{tail}")
    return "\n".join(lines[:3])


@pytest.fixture
def run_variant(tmp_path: Path) -> Iterator:
    """`run_variant("expo")` submits `expo --variant tiny`, runs a worker until every job ends, returns the run."""
    homes: list[Path] = []

    def run(recipe: str, variant: str = "tiny", timeout_s: float = 600) -> RecipeRun:
        home = tmp_path / f"home-{recipe}"
        homes.append(home)
        r = labdeck(home, "submit", recipe, "--variant", variant, "--no-worker")
        assert r.returncode == 0, r.stderr
        r = labdeck(home, "worker", "start", "--cpu-slots", CPU_SLOTS)
        assert r.returncode == 0, r.stderr
        store = open_store(home)
        deadline = time.monotonic() + timeout_s
        while True:
            with store.read() as s:
                jobs = list_jobs(s, newest_first=False)
            if all(j.status in TERMINAL_STATUSES for j in jobs):
                break
            assert time.monotonic() < deadline, f"{recipe} --variant {variant} did not finish in {timeout_s} s"
            time.sleep(0.5)
        assert {j.status for j in jobs} == {"succeeded"}, _why(home, jobs)
        return RecipeRun(home, store, jobs)

    yield run
    for home in homes:  # never leave a daemon behind, whatever happened
        labdeck(home, "worker", "stop", "--now", "--wait")
