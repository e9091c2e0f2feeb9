"""Hypothesis writes the events file: any bytes a job may write, mixed with valid metric lines.

Whatever the lines, ingestion into the real store never raises, reads to the end of the file, keeps
every valid metric exactly once, stores only what SQLite can read back, and leaves the database
intact. 500 examples in the default suite, 10,000 under `-m slow`.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from db.models import Job, Metric
from db.queue import JobDraft, enqueue
from db.session import Store
from engine import ingest

NUMBERS = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.none())
TEXT = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=12)
VALUES = st.recursive(st.one_of(NUMBERS, TEXT), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)
EVENT = st.fixed_dictionaries({"type": st.sampled_from(["metric", "progress", "artifact", "error", "info", "x"])},
                              optional={"name": TEXT, "value": NUMBERS, "step": NUMBERS, "t": NUMBERS, "path": TEXT,
                                        "kind": TEXT, "meta": VALUES, "done": NUMBERS, "total": NUMBERS,
                                        "reason": TEXT, "message": VALUES})


def _dump(ev: dict) -> bytes:
    # json.dumps writes NaN/Infinity and lone surrogates as \\u escapes, as a careless job would
    return (json.dumps(ev) + "\n").encode()


LINE = st.one_of(
    EVENT.map(_dump),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ") + b"\n"),
    VALUES.map(lambda v: (json.dumps(v) + "\n").encode()),
)


def _good(i: int) -> bytes:
    return _dump({"type": "metric", "name": "good", "value": float(i), "step": i, "t": 1.0})


class World:
    """One store for every example, with jobs queued in bulk (a job per example keeps them apart)."""

    def __init__(self, root) -> None:  # noqa: ANN001
        self.root = root
        self.store = Store(root / "home")
        self.free: list[int] = []

    def job(self) -> int:
        if not self.free:
            with self.store.write() as s:
                self.free = enqueue(s, [JobDraft(experiment="gen", name="g", kind="command", spec={"kind": "command"})
                                        for _ in range(1000)])
        return self.free.pop()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("gen"))


def _check(world: World, lines: list[bytes], tail: bytes) -> None:
    root, store = world.root, world.store
    jid = world.job()
    path = root / f"{jid}.jsonl"
    body = b"".join(_good(i) + line for i, line in enumerate(lines)) + tail
    path.write_bytes(body)
    feed = ingest.Feed(jid, path, 0, root, final=True)
    for _ in range(len(lines) + 3):
        batch = ingest.collect([feed])
        if batch.empty:
            break
        with store.write() as s:
            ingest.write(s, batch)
        feed.offset = batch.offsets.get(jid, feed.offset)
        feed.inode = batch.inodes.get(jid, feed.inode)
    with store.read() as s:
        assert s.get(Job, jid).events_offset == len(body)
        good = s.execute(select(Metric.step).where(Metric.job_id == jid, Metric.name == "good")).scalars().all()
        assert sorted(good) == list(range(len(lines))), "a valid line was lost or doubled"
        conn = s.connection()  # everything stored reads back (no lone surrogates, no out-of-range integers)
        conn.exec_driver_sql("SELECT * FROM metric WHERE job_id = ?", (jid,)).fetchall()
        conn.exec_driver_sql("SELECT * FROM artifact WHERE job_id = ?", (jid,)).fetchall()
        conn.exec_driver_sql("SELECT * FROM job WHERE id = ?", (jid,)).fetchall()


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(LINE, max_size=8), tail=st.one_of(st.just(b""), LINE.map(lambda b: b.rstrip(b"\n"))))
def test_generated_event_lines(world, lines: list[bytes], tail: bytes) -> None:
    _check(world, lines, tail)


@pytest.mark.slow
@pytest.mark.timeout(5400)
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(LINE, max_size=8), tail=st.one_of(st.just(b""), LINE.map(lambda b: b.rstrip(b"\n"))))
def test_generated_event_lines_10k(world, lines: list[bytes], tail: bytes) -> None:
    _check(world, lines, tail)


def test_the_store_is_intact_after_the_generated_lines(world) -> None:
    raw = sqlite3.connect(world.store.path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
