"""Moving what jobs report (`events.jsonl`) into the store, in batched transactions.

A job appends JSON lines; the worker reads each running job's file from the byte offset stored
with the job (`job.events_offset`), turns the new complete lines into rows and writes all of them,
for all jobs, in one transaction together with the new offsets. Because the rows and the offset
commit together, a worker killed at any moment neither loses nor duplicates a metric: a restarted
worker re-reads exactly the lines whose rows did not commit.

Speed (bench/bench_worker.py): lines are parsed with one `json.loads` over the whole chunk
(falling back to line by line when a chunk holds a bad line), and metric rows go in with one
DBAPI `executemany` of plain tuples through the session's connection, which is what a raw
SQLAlchemy Core insert costs without its per-row parameter processing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import Session

from db.models import Job
from db.schema import ARTIFACT_INSERT, METRIC_INSERT  # the statements, with every other one, in db.schema

MAX_NAME = 200
MAX_DETAIL = 2000
KNOWN_REASONS = frozenset({"nonzero_exit", "signal", "time_limit", "cuda_oom", "spawn_error", "bad_input"})


@dataclass
class Feed:
    """One running job's events file and how far the store has it."""

    job_id: int
    path: Path
    offset: int
    run_dir: Path


@dataclass
class Batch:
    """Rows for one transaction, gathered from every running job's new lines."""

    metrics: list[tuple[int, str, int | None, float, float]] = field(default_factory=list)
    artifacts: list[tuple[int, str, str, str, float]] = field(default_factory=list)
    progress: dict[int, dict[str, float | None]] = field(default_factory=dict)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    bad_lines: dict[int, int] = field(default_factory=dict)
    bytes_read: int = 0

    @property
    def empty(self) -> bool:
        return not self.offsets


def parse_lines(data: bytes) -> tuple[list[Any], int]:
    """Parse complete JSON lines; returns (objects, number of lines that were not JSON)."""
    body = data.rstrip(b"\n")
    if not body:
        return [], 0
    try:
        return json.loads(b"[" + body.replace(b"\n", b",") + b"]"), 0
    except (ValueError, UnicodeDecodeError):
        pass
    out, bad = [], 0
    for raw in body.split(b"\n"):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            bad += 1
    return out, bad


def read_new(path: Path, offset: int, max_bytes: int) -> tuple[bytes, int]:
    """The complete lines after `offset` (at most about `max_bytes`) and the offset after them."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(max_bytes)
    except FileNotFoundError:
        return b"", offset
    end = data.rfind(b"\n")
    if end < 0:
        return b"", offset
    return data[: end + 1], offset + end + 1


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _artifact_path(run_dir: Path, raw: str) -> str:
    p = Path(raw)
    return str(p if p.is_absolute() else run_dir / p)


def add_events(batch: Batch, feed: Feed, events: Iterable[Any]) -> None:
    """Turn one job's events into rows of `batch`. Malformed events are counted, never fatal."""
    jid = feed.job_id
    bad = 0
    metrics = batch.metrics
    for ev in events:
        if not isinstance(ev, dict):
            bad += 1
            continue
        kind = ev.get("type")
        if kind == "metric":
            name, value, step = ev.get("name"), _finite(ev.get("value")), ev.get("step")
            if not isinstance(name, str) or not name or value is None or (
                step is not None and (isinstance(step, bool) or not isinstance(step, int))
            ):
                bad += 1
                continue
            t = ev.get("t")
            metrics.append((jid, name[:MAX_NAME], step, value, t if isinstance(t, (int, float)) else 0.0))
        elif kind == "progress":
            batch.progress[jid] = {
                "progress_done": _finite(ev.get("done")),
                "progress_total": _finite(ev.get("total")),
                "eta_s": _finite(ev.get("eta_s")),
            }
        elif kind == "artifact":
            path, akind = ev.get("path"), ev.get("kind")
            if not isinstance(path, str) or not path or not isinstance(akind, str):
                bad += 1
                continue
            meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
            t = ev.get("t")
            batch.artifacts.append((jid, akind[:MAX_NAME], _artifact_path(feed.run_dir, path),
                                    json.dumps(meta, default=str), t if isinstance(t, (int, float)) else 0.0))
        elif kind == "error":
            reason = ev.get("reason")
            message = ev.get("message")
            batch.errors[jid] = (
                reason if reason in KNOWN_REASONS else "nonzero_exit",
                (message if isinstance(message, str) else json.dumps(message))[:MAX_DETAIL],
            )
        elif not isinstance(kind, str):
            bad += 1
        # "info" and unknown types stay in the file only
    if bad:
        batch.bad_lines[jid] = batch.bad_lines.get(jid, 0) + bad


def collect(feeds: Iterable[Feed], max_bytes_per_job: int = 8 << 20, max_rows: int = 200_000) -> Batch:
    """Read every feed's new complete lines into one batch (bounded, so one transaction stays short)."""
    batch = Batch()
    for feed in feeds:
        if len(batch.metrics) >= max_rows:
            break
        data, new_offset = read_new(feed.path, feed.offset, max_bytes_per_job)
        if new_offset == feed.offset:
            continue
        events, bad = parse_lines(data)
        add_events(batch, feed, events)
        if bad:
            batch.bad_lines[feed.job_id] = batch.bad_lines.get(feed.job_id, 0) + bad
        batch.offsets[feed.job_id] = new_offset
        batch.bytes_read += len(data)
    return batch


def write(session: Session, batch: Batch) -> None:
    """Write a batch in the caller's transaction: rows, progress, errors and the new offsets."""
    if batch.empty:
        return
    conn = session.connection()
    if batch.metrics:
        conn.exec_driver_sql(METRIC_INSERT, batch.metrics)
    if batch.artifacts:
        conn.exec_driver_sql(ARTIFACT_INSERT, batch.artifacts)
    table = Job.__table__
    for jid, offset in batch.offsets.items():
        values: dict[str, Any] = {"events_offset": offset}
        values.update(batch.progress.get(jid, {}))
        if jid in batch.errors:
            values["failure_reason"], values["failure_detail"] = batch.errors[jid]
        conn.execute(update(table).where(table.c.id == jid).values(**values))
