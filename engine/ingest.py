"""Moving what jobs report (`events.jsonl`) into the store, in batched transactions.

A job appends JSON lines; the worker reads each running job's file from the byte offset stored
with the job (`job.events_offset`), turns the new complete lines into rows and writes them together
with the new offsets. Because the rows and the offset commit together, a worker killed at any
moment neither loses nor duplicates a metric: a restarted worker re-reads exactly the lines whose
rows did not commit.

A job is untrusted input, and one job's bad data must never stop another's:

* every field is checked before it is bound (a finite float, a step that fits SQLite's 64-bit
  integer, text that encodes as UTF-8: `NaN`, `2**64` or a lone surrogate are counted and skipped);
* each job's rows go in under their own savepoint; should one still fail, its rows are retried one
  by one and the failing ones skipped, so the batch commits for every other job;
* a line longer than the read window is skipped (and counted), never left to stop the job's feed;
* a file cut shorter than the stored offset, replaced (another inode), or cut and rewritten past
  the offset (the byte before the offset no longer ends a line), is read again from its start,
  and rows already stored from it are not inserted twice;
* a last line without a newline is read once the job has ended;
* anything but a regular file (a FIFO named `events.jsonl`) is never opened for reading in a way
  that could block: it is opened non-blocking and refused.

What was skipped is counted per job (`job.events_skipped`, with the last reason in
`job.events_note`), in the same transaction.

Speed (bench/bench_worker.py): lines are parsed with one `json.loads` over the whole chunk
(falling back to line by line when a chunk holds a bad line), and metric rows go in with one
DBAPI `executemany` of plain tuples per job.
"""

from __future__ import annotations

import json
import math
import os
import stat
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
MAX_PATH = 4096
INT64 = (-(2**63), 2**63 - 1)
READ_WINDOW = 8 << 20
KNOWN_REASONS = frozenset({"nonzero_exit", "signal", "time_limit", "cuda_oom", "spawn_error", "bad_input"})


@dataclass
class Feed:
    """One running job's events file and how far the store has it."""

    job_id: int
    path: Path
    offset: int
    run_dir: Path
    inode: int = 0  # of the file the offset counts in; 0: not known yet
    final: bool = False  # the job has ended: a last line without a newline counts too


@dataclass
class Batch:
    """Rows for one transaction, gathered from every running job's new lines."""

    metrics: list[tuple[int, str, int | None, float, float]] = field(default_factory=list)
    artifacts: list[tuple[int, str, str, str, float]] = field(default_factory=list)
    progress: dict[int, dict[str, float | None]] = field(default_factory=dict)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    inodes: dict[int, int] = field(default_factory=dict)
    bad_lines: dict[int, int] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)  # why lines were skipped, the last reason
    restarted: set[int] = field(default_factory=set)  # jobs whose file is read again from its start
    refused: set[int] = field(default_factory=set)  # jobs whose events file is not a regular file
    bytes_read: int = 0

    @property
    def empty(self) -> bool:
        return not self.offsets and not self.bad_lines

    def skip(self, job_id: int, n: int, why: str) -> None:
        if n:
            self.bad_lines[job_id] = self.bad_lines.get(job_id, 0) + n
            self.notes[job_id] = why


def parse_lines(data: bytes) -> tuple[list[Any], int]:
    """Parse complete JSON lines; returns (objects, number of lines that were not JSON)."""
    body = data.rstrip(b"\n")
    if not body:
        return [], 0
    try:
        return json.loads(b"[" + body.replace(b"\n", b",") + b"]"), 0
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    out, bad = [], 0
    for raw in body.split(b"\n"):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except (ValueError, UnicodeDecodeError, RecursionError):
            bad += 1
    return out, bad


@dataclass
class Read:
    data: bytes  # complete lines (and, for a final read, the unterminated last one)
    offset: int  # after them
    inode: int
    restarted: bool = False  # the file was cut or replaced: `data` starts at byte 0
    oversized: int = 0  # lines longer than the window, skipped
    refused: str = ""  # not a regular file: nothing read


def _open_regular(path: Path) -> tuple[int | None, os.stat_result | None, str]:
    """Open without ever blocking (a FIFO would block a plain open) and only a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None, ""
    except OSError as e:
        return None, None, f"events file cannot be opened: {e.strerror or e}"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, None, "events file is not a regular file"
    return fd, st, ""


def read_new(path: Path, offset: int, max_bytes: int = READ_WINDOW, *, inode: int = 0, final: bool = False) -> Read:
    """The complete lines after `offset` (at most about `max_bytes`) and the offset after them."""
    fd, st, refused = _open_regular(path)
    if fd is None or st is None:
        return Read(b"", offset, inode, refused=refused)
    try:
        restarted = False
        # Cut (shorter than the offset), replaced (another inode), or cut and written again past
        # the offset already (the byte before the offset is no longer the end of a line).
        if (st.st_size < offset or (inode and st.st_ino != inode)
                or (offset > 0 and not final and os.pread(fd, 1, offset - 1) != b"\n")):
            offset, restarted = 0, True
        data = os.pread(fd, max_bytes, offset)
        end = data.rfind(b"\n")
        if end >= 0:
            return Read(data[: end + 1], offset + end + 1, st.st_ino, restarted)
        if len(data) >= max_bytes:  # one line longer than the window: find its end and skip it
            pos = offset + len(data)
            while True:
                more = os.pread(fd, 1 << 20, pos)
                if not more:
                    break
                nl = more.find(b"\n")
                if nl >= 0:
                    return Read(b"", pos + nl + 1, st.st_ino, restarted, oversized=1)
                pos += len(more)
            if final:
                return Read(b"", pos, st.st_ino, restarted, oversized=1)
            return Read(b"", offset, st.st_ino, restarted)
        if final and data:
            return Read(data, offset + len(data), st.st_ino, restarted)
        return Read(b"", offset, st.st_ino, restarted)
    finally:
        os.close(fd)


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _text(v: Any, limit: int) -> str | None:
    """A non-empty string that SQLite can store as UTF-8 (no lone surrogates), cut to `limit`."""
    if not isinstance(v, str) or not v:
        return None
    v = v[:limit]
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return v


def _step(v: Any) -> tuple[bool, int | None]:
    if v is None:
        return True, None
    if isinstance(v, bool) or not isinstance(v, int) or not INT64[0] <= v <= INT64[1]:
        return False, None
    return True, v


def _time(v: Any) -> float:
    return _finite(v) or 0.0


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
            name, value = _text(ev.get("name"), MAX_NAME), _finite(ev.get("value"))
            ok, step = _step(ev.get("step"))
            if name is None or value is None or not ok:
                bad += 1
                continue
            metrics.append((jid, name, step, value, _time(ev.get("t"))))
        elif kind == "progress":
            batch.progress[jid] = {
                "progress_done": _finite(ev.get("done")),
                "progress_total": _finite(ev.get("total")),
                "eta_s": _finite(ev.get("eta_s")),
            }
        elif kind == "artifact":
            path, akind = _text(ev.get("path"), MAX_PATH), _text(ev.get("kind"), MAX_NAME)
            if path is None or akind is None or "\x00" in path:
                bad += 1
                continue
            meta = ev.get("meta") if isinstance(ev.get("meta"), dict) else {}
            try:
                meta_json = json.dumps(meta, default=str, allow_nan=False)
            except (ValueError, TypeError, RecursionError):
                meta_json = "{}"
            batch.artifacts.append((jid, akind, _artifact_path(feed.run_dir, path), meta_json, _time(ev.get("t"))))
        elif kind == "error":
            reason = ev.get("reason")
            message = ev.get("message")
            text = message if isinstance(message, str) else json.dumps(message, default=str)
            text = text[:MAX_DETAIL].encode("utf-8", "replace").decode("utf-8")
            batch.errors[jid] = (reason if reason in KNOWN_REASONS else "nonzero_exit", text)
        elif not isinstance(kind, str):
            bad += 1
        # "info" and unknown types stay in the file only
    batch.skip(jid, bad, "event lines that are not valid events (bad JSON, a missing or out-of-range field)")


def collect(feeds: Iterable[Feed], max_bytes_per_job: int = READ_WINDOW, max_rows: int = 200_000) -> Batch:
    """Read every feed's new complete lines into one batch (bounded, so one transaction stays short)."""
    batch = Batch()
    for feed in feeds:
        if len(batch.metrics) >= max_rows:
            break
        r = read_new(feed.path, feed.offset, max_bytes_per_job, inode=feed.inode, final=feed.final)
        if r.refused:  # recorded once: the caller stops reading this feed
            batch.skip(feed.job_id, 1, r.refused)
            batch.refused.add(feed.job_id)
            continue
        if r.offset == feed.offset and not r.restarted and r.inode == feed.inode:
            continue
        if r.restarted:
            batch.restarted.add(feed.job_id)
        events, bad = parse_lines(r.data)
        add_events(batch, feed, events)
        batch.skip(feed.job_id, bad, "event lines that are not JSON")
        batch.skip(feed.job_id, r.oversized, f"an event line longer than {max_bytes_per_job >> 20} MB")
        batch.offsets[feed.job_id] = r.offset
        batch.inodes[feed.job_id] = r.inode
        batch.bytes_read += len(r.data)
    return batch


def _existing(conn: Any, jid: int) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """What the store already has of a job, keyed as a re-read line would be: a metric by name, step
    and value (a rewritten file carries new timestamps), an artifact by kind and path."""
    m = {tuple(r) for r in conn.exec_driver_sql(
        "SELECT name, step, value FROM metric WHERE job_id = ?", (jid,)).fetchall()}
    a = {tuple(r) for r in conn.exec_driver_sql(
        "SELECT kind, path FROM artifact WHERE job_id = ?", (jid,)).fetchall()}
    return m, a


def _insert(session: Session, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """Insert rows under a savepoint; on failure one by one, skipping those that fail. Returns the skipped count."""
    if not rows:
        return 0
    # The connection is asked for inside each savepoint: that is what makes SQLAlchemy emit it.
    try:
        with session.begin_nested():
            session.connection().exec_driver_sql(sql, rows)
        return 0
    except Exception:  # noqa: BLE001 - a value the checks did not foresee: find and skip it
        skipped = 0
        for row in rows:
            try:
                with session.begin_nested():
                    session.connection().exec_driver_sql(sql, [row])
            except Exception:  # noqa: BLE001
                skipped += 1
        return skipped


def write(session: Session, batch: Batch) -> None:
    """Write a batch in the caller's transaction: each job's rows under its own savepoint."""
    if batch.empty:
        return
    conn = session.connection()
    by_job_m: dict[int, list[tuple[Any, ...]]] = {}
    for row in batch.metrics:
        by_job_m.setdefault(row[0], []).append(row)
    by_job_a: dict[int, list[tuple[Any, ...]]] = {}
    for row in batch.artifacts:
        by_job_a.setdefault(row[0], []).append(row)
    table = Job.__table__
    for jid in sorted(set(batch.offsets) | set(batch.bad_lines)):
        metrics, artifacts = by_job_m.get(jid, []), by_job_a.get(jid, [])
        if jid in batch.restarted:  # rows already stored from the earlier reading are not inserted again
            seen_m, seen_a = _existing(conn, jid)
            metrics = [r for r in metrics if r[1:4] not in seen_m]
            artifacts = [r for r in artifacts if r[1:3] not in seen_a]
        skipped = _insert(session, METRIC_INSERT, metrics) + _insert(session, ARTIFACT_INSERT, artifacts)
        if skipped:
            batch.skip(jid, skipped, "event values the store refused")
        values: dict[str, Any] = {}
        if jid in batch.offsets:
            values["events_offset"] = batch.offsets[jid]
        if jid in batch.inodes:
            values["events_inode"] = batch.inodes[jid]
        values.update(batch.progress.get(jid, {}))
        if jid in batch.errors:
            values["failure_reason"], values["failure_detail"] = batch.errors[jid]
        if jid in batch.bad_lines:
            values["events_skipped"] = table.c.events_skipped + batch.bad_lines[jid]
            values["events_note"] = batch.notes.get(jid, "")
        with session.begin_nested():
            session.connection().execute(update(table).where(table.c.id == jid).values(**values))
