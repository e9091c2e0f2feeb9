"""Run engine jobs the way the worker does: a spec.json in a run folder, `python -m engine.jobs RUN_DIR`.

Until the worker lands, `run_job` starts the job process itself (argument list, own session, so a
test can SIGKILL it like the worker would). Switching to the worker later means replacing the body
of `start_job` with `python -m engine.launcher RUN_DIR`; tests only see `JobResult`.
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


@dataclass
class JobResult:
    run_dir: Path
    returncode: int
    stderr: str
    events: list[dict[str, Any]]

    @property
    def outputs(self) -> Path:
        return self.run_dir / "outputs"

    def records(self, name: str = "records.jsonl") -> list[dict[str, Any]]:
        with open(self.outputs / name, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def summary(self) -> dict[str, float]:
        """Summary metrics (no step), last value wins."""
        return {e["name"]: e["value"] for e in self.events if e["type"] == "metric" and "step" not in e}

    def infos(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "info"]

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "error"]


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def write_run_dir(run_dir: Path, spec: dict[str, Any]) -> Path:
    """Validate the spec as the CLI would and write it where the job reads it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = dump_spec(parse_spec({**BASE, **spec}))
    (run_dir / "spec.json").write_text(json.dumps(data), encoding="utf-8")
    return run_dir


def start_job(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(  # noqa: S603 - argument list, no shell
        [sys.executable, "-m", "engine.jobs", str(run_dir)],
        cwd=REPO, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def collect(run_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> JobResult:
    _, err = proc.communicate(timeout=timeout)
    events = list(iter_events(run_dir / "events.jsonl"))
    return JobResult(run_dir, proc.returncode, err, events)


def run_job(run_dir: Path, spec: dict[str, Any] | None = None, timeout: float = 300) -> JobResult:
    """Write the spec (if given) and run the job to completion in a subprocess."""
    if spec is not None:
        write_run_dir(run_dir, spec)
    return collect(run_dir, start_job(run_dir), timeout)


def run_inprocess(run_dir: Path, spec: dict[str, Any]) -> JobResult:
    """The same job in this process (no interpreter start-up, models cached by the OS): for the many small
    checks. Exit codes are mapped as `engine.jobs.__main__` maps them."""
    from engine.jobs.__main__ import main

    write_run_dir(run_dir, spec)
    code = main([str(run_dir)])
    events = list(iter_events(run_dir / "events.jsonl"))
    return JobResult(run_dir, code, "", events)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
