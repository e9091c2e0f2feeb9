"""The wire format between a job process and the worker: JSON lines in `events.jsonl`.

A job never opens the database. It appends one JSON object per line to its run folder's
`events.jsonl`, flushed line by line; the worker reads new complete lines from a byte offset and
writes them into SQLite in batches. The same file is what tests and `jq` read.

Event types (every event also has `t`, Unix seconds):

    {"type": "progress", "done": 40, "total": 100, "unit": "records", "rate": 12.5, "eta_s": 4.8}
    {"type": "metric", "name": "loss", "value": 1.23, "step": 10}        # step omitted: summary
    {"type": "artifact", "kind": "model", "path": "outputs/model", "meta": {...}}
    {"type": "error", "reason": "cuda_oom", "message": "..."}
    {"type": "info", "message": "...", ...}                           # anything else worth keeping

This module is standard library only, so a user's own script can `from engine.events import
Reporter` (or just print JSON to the path in LABDECK_EVENTS) without loading torch.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
ENV_EVENTS = "LABDECK_EVENTS"
ENV_RUN_DIR = "LABDECK_RUN_DIR"
ENV_JOB_ID = "LABDECK_JOB_ID"


class Reporter:
    """Append events to a job's events file. Safe to call from several threads.

    Each event is written with a single `write` of one line to a file opened in append mode,
    so a crash loses at most the line being written, never corrupts earlier ones.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        target = path or os.environ.get(ENV_EVENTS)
        if not target:
            raise RuntimeError(f"no events file: pass a path or set {ENV_EVENTS}")
        self.path = Path(target)
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the reporter
        self._progress_start: tuple[float, float] | None = None

    def emit(self, type_: str, **fields: Any) -> None:
        event = {"type": type_, "t": time.time(), **fields}
        line = json.dumps(event, default=_jsonable, allow_nan=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def metric(self, name: str, value: float, step: int | None = None) -> None:
        value = float(value)
        if not math.isfinite(value):
            self.emit("info", message=f"metric {name} is {value}", metric=name, step=step)
            return
        self.emit("metric", name=name, value=value, **({} if step is None else {"step": int(step)}))

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        for name, value in values.items():
            self.metric(name, value, step)

    def progress(self, done: float, total: float | None = None, unit: str = "items") -> None:
        """Report progress; rate and ETA are derived from the first call."""
        now = time.time()
        if self._progress_start is None or done < self._progress_start[1]:
            self._progress_start = (now, done)
        t0, d0 = self._progress_start
        rate = (done - d0) / (now - t0) if now > t0 and done > d0 else None
        eta = (total - done) / rate if rate and total is not None else None
        self.emit("progress", done=done, total=total, unit=unit, rate=rate, eta_s=eta)

    def artifact(self, kind: str, path: str | Path, **meta: Any) -> None:
        self.emit("artifact", kind=kind, path=str(path), meta=meta)

    def error(self, reason: str, message: str) -> None:
        self.emit("error", reason=reason, message=message)

    def info(self, message: str, **fields: Any) -> None:
        self.emit("info", message=message, **fields)

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


@dataclass(frozen=True)
class Chunk:
    events: list[dict[str, Any]]
    offset: int  # byte offset just after the last complete line read
    bad_lines: int


def read_events(path: Path | str, offset: int = 0, max_bytes: int = 8 << 20) -> Chunk:
    """Read complete lines from `offset`; a partial last line waits for the next call.

    Lines that are not JSON objects (a user's script printed garbage) are counted and skipped,
    never fatal.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            fh.seek(offset)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        return Chunk([], offset, 0)
    end = data.rfind(b"\n")
    if end < 0:
        return Chunk([], offset, 0)
    events: list[dict[str, Any]] = []
    bad = 0
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            ev = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            bad += 1
            continue
        if isinstance(ev, dict) and isinstance(ev.get("type"), str):
            events.append(ev)
        else:
            bad += 1
    return Chunk(events, offset + end + 1, bad)


def iter_events(path: Path | str) -> Iterator[dict[str, Any]]:
    """Every event in a file, for tests and notebooks."""
    offset = 0
    while True:
        chunk = read_events(path, offset)
        yield from chunk.events
        if chunk.offset == offset:
            return
        offset = chunk.offset
