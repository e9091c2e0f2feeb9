"""`labdeck demo --no-tui`, the README's main job, end to end: 31 real jobs under a real worker."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# A whole pipeline of real jobs: generous, because a shared or busy machine can be several times slower.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture
def demo_home(tmp_path: Path):  # noqa: ANN201
    home = tmp_path / "demo"
    yield home
    # never leave a daemon behind, whatever happened
    subprocess.run([sys.executable, "-m", "cli", "worker", "stop", "--now", "--wait", "--home", str(home)],
                   capture_output=True, timeout=120)


def test_demo_runs_the_car_pipeline_and_prints_its_tables(demo_home: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", LABDECK_HOME=str(demo_home.parent / "unused"))
    r = subprocess.run([sys.executable, "-m", "cli", "demo", "--no-tui", "--home", str(demo_home)],
                       capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "demo-car: win_rate (last)" in out and "demo-car: car (last)" in out
    assert "student \\ teacher" in out
    for name in ("teacher-a", "teacher-b", "teacher-c", "student-llama", "student-qwen"):
        assert name in out
    assert "Spearman rho of CAR against win rate" in out and "average" in out
    # the judge discriminates: rho is a number for each student (a constant win rate would make it NaN)
    rhos = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(student-\w+)\s+n=3\s+rho=(\S+)$", out, re.M)}
    assert set(rhos) == {"student-llama", "student-qwen"} and all(math.isfinite(v) for v in rhos.values()), out

    from db.queries import experiment_metric, list_jobs
    from db.session import open_store

    store = open_store(demo_home)
    with store.read() as s:
        jobs = list_jobs(s, experiment="demo-car")
        metrics = {m: {row.id: row.value for row in experiment_metric(s, "demo-car", m) if row.value is not None}
                   for m in ("car", "reward", "loss", "loss_ifd", "win_rate", "learning_rate")}
    assert len(jobs) == 31 and {j.status for j in jobs} == {"succeeded"}
    by_stage: dict[str, list[int]] = {}
    for j in jobs:
        by_stage.setdefault(j.params["stage"], []).append(j.id)
    assert {k: len(v) for k, v in by_stage.items()} == {"build": 1, "generate": 3, "quality": 3, "compat": 6, "sft": 6, "answer": 6, "judge": 6}
    for job_id in by_stage["compat"]:
        assert {"car", "reward", "loss", "loss_ifd"} <= {m for m, vals in metrics.items() if job_id in vals}
    for job_id in by_stage["sft"]:
        assert job_id in metrics["loss"] and job_id in metrics["learning_rate"]
    win = {}
    for j in jobs:
        if j.params["stage"] == "judge":
            assert 0.0 <= metrics["win_rate"][j.id] <= 100.0
            win[j.params["student"], j.params["teacher"]] = metrics["win_rate"][j.id]
    for student in ("student-llama", "student-qwen"):  # a student taught by the best teacher beats one taught by noise
        assert win[student, "teacher-a"] > win[student, "teacher-c"], win
    # running it again reopens the same results instead of queueing more jobs
    r2 = subprocess.run([sys.executable, "-m", "cli", "demo", "--no-tui", "--home", str(demo_home)],
                        capture_output=True, text=True, timeout=300, env=env)
    assert r2.returncode == 0 and "queued" not in r2.stdout.splitlines()[0]
    with store.read() as s:
        assert len(list_jobs(s, experiment="demo-car")) == 31
