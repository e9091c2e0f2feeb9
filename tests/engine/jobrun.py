"""Run engine jobs the way the worker will, until it lands: spec.json in a run folder, then
`python -m engine.jobs RUN_DIR` as a subprocess (or `engine.jobs.__main__.main` in-process, which is
the same entry point without paying torch's import again), and the events read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class JobResult:
    rc: int
    events: list[dict[str, Any]]
    stderr: str = ""

    def metrics(self, name: str) -> list[tuple[int | None, float]]:
        return [(e.get("step"), e["value"]) for e in self.events if e["type"] == "metric" and e["name"] == name]

    def series(self, name: str) -> dict[int, float]:
        return {s: v for s, v in self.metrics(name) if s is not None}

    def summary(self, name: str) -> float:
        vals = [v for s, v in self.metrics(name) if s is None]
        assert vals, f"no summary metric {name}"
        return vals[-1]

    def infos(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "info"]

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "error"]

    def artifacts(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "artifact"]


def write_spec(run_dir: Path, spec: dict[str, Any]) -> Path:
    """Validate and normalise the spec as the queue would, then write RUN_DIR/spec.json."""
    from engine.specs import dump_spec, parse_spec

    spec = {"experiment": "test", "name": run_dir.name or "job", **spec}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps(dump_spec(parse_spec(spec))), encoding="utf-8")
    return run_dir


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    from engine.events import iter_events

    return list(iter_events(run_dir / "events.jsonl"))


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def start_job(run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine.jobs", str(run_dir)], env=job_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run_job(run_dir: Path, spec: dict[str, Any] | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> JobResult:
    """A subprocess, exactly as the launcher will start it."""
    if spec is not None:
        write_spec(run_dir, spec)
    proc = start_job(run_dir, env)
    _, err = proc.communicate(timeout=timeout)
    return JobResult(proc.returncode, read_events(run_dir), err)


def run_inprocess(run_dir: Path, spec: dict[str, Any] | None = None) -> JobResult:
    """The same entry point (`engine.jobs.__main__.main`), in this process."""
    from engine.jobs.__main__ import main

    if spec is not None:
        write_spec(run_dir, spec)
    rc = main([str(run_dir)])
    return JobResult(rc, read_events(run_dir))
