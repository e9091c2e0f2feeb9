"""Run engine jobs the way the worker does, and read back what they reported: one harness for every job test.

A job is a spec.json in a run folder. `start_job` spawns `python -m engine.launcher RUN_DIR` in its
own session, exactly as the worker does, with the start gate open (`LABDECK_NO_GATE=1`: no
database here to commit the pid to); the launcher runs `python -m engine.jobs RUN_DIR` and writes
`exit.json`. A test can SIGKILL the whole process group as the worker's kill path would.
`run_inprocess` calls the same job entry point (`engine.jobs.__main__.main`) without paying
torch's import again, for the many small checks; exit codes are mapped as that entry point maps them.

Importable from any test (pyproject.toml puts tests/engine on the path), so no test imports a conftest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.events import iter_events
from engine.specs import dump_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
BASE = {"experiment": "tests", "name": "job"}
WORDS = "the quick brown fox jumps over the lazy dog while a language model predicts the next token".split()


@dataclass
class JobResult:
    run_dir: Path
    returncode: int
    stderr: str
    events: list[dict[str, Any]]

    @property
    def outputs(self) -> Path:
        return self.run_dir / "outputs"

    def exit_record(self) -> dict[str, Any] | None:
        """The launcher's exit.json (None for in-process runs)."""
        path = self.run_dir / "exit.json"
        return json.loads(path.read_text()) if path.exists() else None

    def records(self, name: str = "records.jsonl") -> list[dict[str, Any]]:
        with open(self.outputs / name, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def metrics(self, name: str) -> list[tuple[int | None, float]]:
        """(step, value) of every report of metric `name`; step None for a summary value."""
        return [(e.get("step"), e["value"]) for e in self.events if e["type"] == "metric" and e["name"] == name]

    def series(self, name: str) -> dict[int, float]:
        """step -> value of a metric reported per step."""
        return {s: v for s, v in self.metrics(name) if s is not None}

    def summary(self, name: str | None = None) -> Any:
        """Every summary metric (no step) as a dict, last value wins; or the value of one of them."""
        values = {e["name"]: e["value"] for e in self.events if e["type"] == "metric" and "step" not in e}
        if name is None:
            return values
        assert name in values, f"no summary metric {name} (have: {', '.join(sorted(values))})"
        return values[name]

    def infos(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "info"]

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "error"]

    def artifacts(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "artifact"]


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a job gets: this checkout first on the path, offline, two threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", "2")
    env.update(extra or {})
    return env


def write_run_dir(run_dir: Path, spec: dict[str, Any]) -> Path:
    """Validate and normalise the spec as the queue would, then write RUN_DIR/spec.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = dump_spec(parse_spec({**BASE, **spec}))
    (run_dir / "spec.json").write_text(json.dumps(data), encoding="utf-8")
    return run_dir


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    return list(iter_events(run_dir / "events.jsonl"))


def start_job(run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The launcher, in its own session (so the test can kill the group), with the start gate open."""
    return subprocess.Popen(  # noqa: S603 - argument list, no shell
        [sys.executable, "-m", "engine.launcher", str(run_dir)],
        cwd=REPO, env=job_env({"LABDECK_NO_GATE": "1", **(env or {})}), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def collect(run_dir: Path, proc: subprocess.Popen[str], timeout: float = 300) -> JobResult:
    _, err = proc.communicate(timeout=timeout)
    return JobResult(run_dir, proc.returncode, err, read_events(run_dir))


def run_job(run_dir: Path, spec: dict[str, Any] | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> JobResult:
    """Write the spec (if given) and run the job to completion through the launcher."""
    if spec is not None:
        write_run_dir(run_dir, spec)
    return collect(run_dir, start_job(run_dir, env), timeout)


def run_inprocess(run_dir: Path, spec: dict[str, Any] | None = None) -> JobResult:
    """The same job entry point in this process (no interpreter start-up, models cached by the OS)."""
    from engine.jobs.__main__ import main

    if spec is not None:
        write_run_dir(run_dir, spec)
    code = main([str(run_dir)])
    return JobResult(run_dir, code, "", read_events(run_dir))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def instruction_rows(n: int, with_input_every: int = 2) -> list[dict[str, Any]]:
    """Instructions of widely varying length, half of them with an input, each with a reference output."""
    rows = []
    for i in range(n):
        k = 2 + (i * 7) % 23
        rows.append({
            "id": f"r{i}",
            "instruction": f"Task {i}: " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(k)) + ".",
            "input": ("The cat sat on the mat " * (1 + i % 3)).strip() if i % with_input_every else "",
            "output": f" Reference answer {i}.",
        })
    return rows
