"""Dependencies that say the truth: the pinned set satisfies pyproject, and the interactive side runs
without the numeric stack (numpy, scipy, scikit-learn, pyarrow), which only the engine extra installs.

The second test blocks those imports in every process it starts (a sitecustomize on PYTHONPATH,
inherited by the worker, the launcher and the job), then drives the CLI and a real worker.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from db.results import spearman

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[2]
NUMERIC = ("numpy", "scipy", "sklearn", "pyarrow")
BLOCKER = f"""
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NUMERIC!r}:
            raise ImportError(f"{{name}} is blocked: the interactive side must not need it")
sys.meta_path.insert(0, _Block())
"""


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_constraints_pin_every_dependency_within_its_bounds() -> None:
    project = _pyproject()
    pins: dict[str, list[str]] = {}  # a package may have two pins: one per Python range (a marker)
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pin = Requirement(line)
            (version,) = [s.version for s in pin.specifier if s.operator == "=="]
            pins.setdefault(pin.name.lower().replace("_", "-"), []).append(version)
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in reqs:
        name = req.name.lower().replace("_", "-")
        if name == "torch":  # the Makefile's TORCH picks the build (CPU or CUDA), not the constraints
            continue
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        for version in pins[name]:
            assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} violates {req}"
    base = {Requirement(r).name.lower() for r in project["dependencies"]}
    assert not base & {"numpy", "scipy", "scikit-learn", "pyarrow", "torch", "transformers"}


def test_cli_and_worker_run_without_the_numeric_stack(tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{REPO}", "LABDECK_HOME": str(home)}
    spec = tmp_path / "hello.yaml"
    spec.write_text('experiment: hello\nname: greet\nkind: command\ncommand: ["python", "-c", "print(42)"]\n')

    def labdeck(*args: str, check: int = 0) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == check, p.stderr
        return p

    probe = subprocess.run([sys.executable, "-c", "import numpy"], env=env, capture_output=True, text=True)
    assert "blocked" in probe.stderr  # the blocker works
    assert "prefetch" in labdeck("--help").stdout
    (job_id,) = json.loads(labdeck("submit", str(spec), "--no-worker", "--json").stdout)["ids"]
    worker = subprocess.Popen([sys.executable, "-m", "engine.daemon", "--home", str(home), "--poll", "0.05"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        exit_json = home / "runs" / str(job_id) / "exit.json"
        for _ in range(1200):  # the launcher writes exit.json when the job ends; the worker records it soon after
            if exit_json.exists() and json.loads(labdeck("ls", "--json").stdout)[0]["status"] != "running":
                break
            time.sleep(0.1)
        rows = json.loads(labdeck("ls", "--json").stdout)
        assert rows[0]["status"] == "succeeded", worker.stderr.read() if worker.poll() is not None else rows
    finally:
        worker.terminate()
        worker.wait(10)
    assert (home / "runs" / str(job_id) / "log.txt").read_text().strip() == "42"
    assert labdeck("export", "hello", "--format", "csv").stdout.startswith("id,")
    err = labdeck("export", "hello", "--format", "parquet", "-o", str(tmp_path / "x.parquet"), check=2).stderr
    assert err.strip() == "labdeck: --format parquet: needs pyarrow, which this install lacks: pip install 'labdeck[analysis]'"


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    from scipy.stats import spearmanr

    rng = random.Random(seed)
    n = rng.randint(3, 30)
    x = [float(rng.randint(0, 5)) for _ in range(n)]
    y = [v + rng.random() * 4 for v in x]
    if len(set(x)) == 1:
        x[0] += 1
    assert spearman(x, y) == pytest.approx(float(spearmanr(x, y).statistic), abs=1e-12)
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) != spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])  # NaN
