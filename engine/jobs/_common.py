"""What every engine job process shares: its run folder, its reporter, and failure classification.

A job is started as `python -m engine.jobs RUN_DIR`. It reads `RUN_DIR/spec.json`, writes its
results under `RUN_DIR/outputs/`, and reports through `RUN_DIR/events.jsonl`. It never opens the
database.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.events import EVENTS_FILE, Reporter


class JobInputError(Exception):
    """Input the job cannot use (a missing path, a dataset without the mapped fields).

    Raised before any expensive work; the runner reports it as `bad_input` with this one line.
    """


# Exit codes the launcher and worker understand, besides 0 and 1.
EXIT_BAD_INPUT = 3
EXIT_CUDA_OOM = 4


@dataclass
class JobContext:
    run_dir: Path
    spec: dict[str, Any]
    events: Reporter

    @property
    def outputs(self) -> Path:
        path = self.run_dir / "outputs"
        path.mkdir(exist_ok=True)
        return path

    @property
    def job_id(self) -> int | None:
        v = os.environ.get("LABDECK_JOB_ID")
        return int(v) if v else None

    def output_path(self, name: str) -> Path:
        """A path inside `outputs/`; `name` may not escape it (no absolute paths, no `..`)."""
        from engine.paths import safe_join

        return safe_join(self.outputs, name)


def load_context(run_dir: Path | str) -> JobContext:
    run = Path(run_dir).absolute()
    spec = json.loads((run / "spec.json").read_text(encoding="utf-8"))
    return JobContext(run, spec, Reporter(run / EVENTS_FILE))


def is_cuda_oom(exc: BaseException) -> bool:
    """torch.OutOfMemoryError, or any error whose text says CUDA ran out of memory."""
    name = type(exc).__name__
    return name in ("OutOfMemoryError", "CUDAOutOfMemoryError") or "CUDA out of memory" in str(exc)


# Test aid: "N:PATH" makes a job wait, once it has done N units of work (rows written, optimizer
# steps), until PATH exists. A test then kills or inspects the job at a known point instead of
# racing it; unset, it costs one dictionary lookup per unit.
HOLD_ENV = "LABDECK_HOLD_AFTER"


def hold_point(done: int) -> None:
    """Wait here while LABDECK_HOLD_AFTER="N:PATH" is set, `done` >= N and PATH does not exist."""
    value = os.environ.get(HOLD_ENV)
    if not value:
        return
    n, _, path = value.partition(":")
    if done < int(n):
        return
    while not os.path.exists(path):
        time.sleep(0.01)
