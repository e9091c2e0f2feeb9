"""An optional mirror of each job's metrics to the tracker a lab already uses (Weights & Biases).

Off by default. A home turns it on with a file `mirror.json` in the home folder:

    {"tracker": "wandb", "project": "my-lab", "mode": "offline"}

(`mode` is WANDB_MODE: "offline" writes runs under the job's run folder for a later `wandb sync`;
"online" needs a login on the box; `entity` and `dir` are optional.) `labdeck mirror on|off|status`
writes and reads that file.

Where it runs, and why there: the worker must never wait on a tracker (a slow network, a login
prompt) nor import it, so the mirror is a process of its own. The launcher, after starting a job,
starts `python -m engine.integrations.mirror RUN_DIR` in its own session when the home has a
`mirror.json` (without importing this module, so neither the launcher nor the worker ever loads a
tracker); it follows the job's `events.jsonl` (the same lines the worker ingests), sends
metrics with their steps, summaries and the spec as the run's config, and ends the tracker's run
when the launcher writes `exit.json`. A mirror that fails (tracker not installed, bad config) writes
why to `mirror.log` in the run folder and exits; the job never notices.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.events import EVENTS_FILE, read_events

CONFIG_FILE = "mirror.json"
LOG_FILE = "mirror.log"
TRACKERS = ("wandb",)
MODES = ("offline", "online", "disabled")
POLL_S = 0.5


def read_config(home: Path) -> dict[str, Any] | None:
    """The home's mirror settings, or None when mirroring is off (no file). Raises ValueError naming a bad field."""
    path = Path(home) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: must be a JSON object")
    if cfg.get("tracker", "wandb") not in TRACKERS:
        raise ValueError(f"{path}: tracker {cfg.get('tracker')!r} is not one of {', '.join(TRACKERS)}")
    if cfg.get("mode", "offline") not in MODES:
        raise ValueError(f"{path}: mode {cfg.get('mode')!r} is not one of {', '.join(MODES)}")
    if not isinstance(cfg.get("project", "labdeck"), str):
        raise ValueError(f"{path}: project must be a string")
    return {"tracker": "wandb", "project": "labdeck", "mode": "offline", **cfg}


def write_config(home: Path, cfg: dict[str, Any] | None) -> None:
    """Turn mirroring on with `cfg`, or off with None."""
    path = Path(home) / CONFIG_FILE
    if cfg is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    read_config(home)


def home_of(run_dir: Path) -> Path:
    return Path(run_dir).parent.parent  # HOME/runs/<job id>


class WandbSink:
    """One W&B run per job; metrics with a step go to history, those without to the summary."""

    def __init__(self, cfg: dict[str, Any], run_dir: Path, spec: dict[str, Any]) -> None:
        os.environ["WANDB_MODE"] = cfg["mode"]
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        job = run_dir.name
        self.run = wandb.init(
            project=cfg["project"], entity=cfg.get("entity"), dir=str(cfg.get("dir") or run_dir),
            name=f"{job} {spec.get('name', '')}".strip(), group=spec.get("experiment"), job_type=spec.get("kind"),
            config={"labdeck_job": int(job) if job.isdigit() else job, **spec}, id=f"labdeck-{job}-{os.getpid()}",
            reinit=True,
        )
        self.last_step = -1

    def metric(self, name: str, value: float, step: int | None) -> None:
        if step is None:
            self.run.summary[name] = value
        elif step >= self.last_step:
            self.run.log({name: value}, step=step)
            self.last_step = step
        else:  # W&B steps only move forward; an older step is kept as a field of the current one
            self.run.log({name: value, f"{name}_step": step})

    def finish(self, exit_code: int) -> None:
        self.run.finish(exit_code=exit_code)


def follow(run_dir: Path, sink: Any, poll_s: float = POLL_S, max_wait_s: float | None = None) -> int:
    """Send every event of the job to `sink` until `exit.json` appears and the file is drained; returns events sent."""
    from engine.launcher import EXIT_FILE

    events = run_dir / EVENTS_FILE
    offset = sent = 0
    t0 = time.monotonic()
    while True:
        ended = (run_dir / EXIT_FILE).exists()
        chunk = read_events(events, offset)
        offset = chunk.offset
        for ev in chunk.events:
            if ev.get("type") == "metric" and isinstance(ev.get("name"), str) and isinstance(ev.get("value"), (int, float)):
                step = ev.get("step")
                sink.metric(ev["name"], float(ev["value"]), step if isinstance(step, int) else None)
                sent += 1
        if ended and not chunk.events:
            return sent
        if max_wait_s is not None and time.monotonic() - t0 > max_wait_s:
            return sent
        if not chunk.events:
            time.sleep(poll_s)


def run(run_dir: Path) -> int:
    from engine.launcher import SPEC_FILE, read_exit

    cfg = read_config(home_of(run_dir))
    if cfg is None:
        return 0
    spec = json.loads((run_dir / SPEC_FILE).read_text(encoding="utf-8"))
    sink = WandbSink(cfg, run_dir, spec)
    n = follow(run_dir, sink)
    rc = (read_exit(run_dir) or {}).get("returncode")
    sink.finish(rc if isinstance(rc, int) else 1)
    print(f"mirrored {n} metrics to {cfg['tracker']} ({cfg['mode']}) project {cfg['project']}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m engine.integrations.mirror RUN_DIR", file=sys.stderr)
        return 2
    try:
        return run(Path(args[0]).absolute())
    except Exception as e:  # noqa: BLE001 - the mirror reports and exits; it never affects the job
        print(f"mirror: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
