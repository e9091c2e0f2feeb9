"""Ingestion against a hostile or broken job: poison values, oversized, cut, replaced and
unterminated lines, a FIFO for an events file. One job's bad data never stops another's, nothing is
lost, nothing is inserted twice."""

from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import func, select
from worker_helpers import submit

from db.models import Job, Metric
from engine import ingest


def _line(**ev) -> bytes:
    return (json.dumps({"type": "metric", "t": 1.0, **ev}) + "\n").encode()


def _rows(store, jid: int) -> list[tuple]:
    with store.read() as s:
        return [tuple(r) for r in s.execute(select(Metric.name, Metric.step, Metric.value)
                                            .where(Metric.job_id == jid).order_by(Metric.id)).all()]


def _job(store, jid: int) -> Job:
    with store.read() as s:
        j = s.get(Job, jid)
        s.expunge(j)
        return j


def _ingest_all(store, feeds: list[ingest.Feed]) -> None:
    for _ in range(10):
        batch = ingest.collect(feeds)
        if batch.empty:
            return
        with store.write() as s:
            ingest.write(s, batch)
        for f in feeds:
            f.offset = batch.offsets.get(f.job_id, f.offset)
            f.inode = batch.inodes.get(f.job_id, f.inode)


POISON = [  # (line, lines it should cost: skipped and counted)
    (b'{"type": "metric", "name": "loss", "value": 1.0, "step": 1, "t": NaN}\n', 0),  # a NaN time: stored as 0
    (b'{"type": "metric", "name": "loss", "value": 1.0, "step": 18446744073709551616, "t": 1}\n', 1),  # 2**64
    (b'{"type": "metric", "name": "loss", "value": 1.0, "step": -9223372036854775809, "t": 1}\n', 1),
    (b'{"type": "metric", "name": "\\udcff", "value": 1.0, "step": 1, "t": 1}\n', 1),  # a lone surrogate
    (b'{"type": "metric", "name": "x", "value": 1e999, "step": 1}\n', 1),  # inf
    (b'{"type": "metric", "name": "x", "value": 100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}\n', 1),
    (b'{"type": "artifact", "kind": "model", "path": "\\udcff/x"}\n', 1),
    (b'{"type": "error", "reason": "cuda_oom", "message": "\\ud800 boom"}\n', 0),
    (b'{"type": "progress", "done": 1e400, "total": 10}\n', 0),
    (b'[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n', 1),
]


@pytest.mark.parametrize(("poison", "skipped"), POISON, ids=[f"poison{i}" for i in range(len(POISON))])
def test_a_poison_line_never_stops_the_other_jobs(tmp_path, store, poison: bytes, skipped: int) -> None:
    good, bad = submit(store, ["true"]), submit(store, ["true"])
    gp, bp = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    gp.write_bytes(_line(name="loss", value=0.5, step=1) + _line(name="loss", value=0.25, step=2))
    bp.write_bytes(_line(name="ok", value=1.0, step=1) + poison + _line(name="ok", value=2.0, step=2))
    feeds = [ingest.Feed(bad, bp, 0, tmp_path), ingest.Feed(good, gp, 0, tmp_path)]
    _ingest_all(store, feeds)
    assert _rows(store, good) == [("loss", 1, 0.5), ("loss", 2, 0.25)]
    rows = _rows(store, bad)
    assert ("ok", 1, 1.0) in rows and ("ok", 2, 2.0) in rows
    j = _job(store, bad)
    assert j.events_offset == bp.stat().st_size
    assert j.events_skipped == skipped, (j.events_skipped, rows)
    assert len(rows) == 2 + (b"NaN" in poison), rows  # a NaN time keeps the metric, at time 0
    assert not skipped or j.events_note
    with store.read() as s:  # and the whole database is still readable as UTF-8
        s.connection().exec_driver_sql("SELECT * FROM job").fetchall()
        s.connection().exec_driver_sql("SELECT * FROM artifact").fetchall()


def test_a_value_the_checks_miss_is_skipped_by_the_savepoint(tmp_path, store) -> None:
    """Belt and braces: a row the store refuses is skipped alone, the job's other rows commit."""
    good, bad = submit(store, ["true"]), submit(store, ["true"])
    batch = ingest.Batch(metrics=[(good, "a", 1, 1.0, 0.0), (bad, "b", 1, 1.0, 0.0), (bad, "b", 2**70, 1.0, 0.0),
                                  (bad, "b", 3, 1.0, 0.0)], offsets={good: 10, bad: 20})
    with store.write() as s:
        ingest.write(s, batch)
    assert _rows(store, good) == [("a", 1, 1.0)]
    assert _rows(store, bad) == [("b", 1, 1.0), ("b", 3, 1.0)]
    assert (_job(store, bad).events_offset, _job(store, bad).events_skipped) == (20, 1)


def test_an_oversized_line_is_skipped_and_the_feed_goes_on(tmp_path, store) -> None:
    jid = submit(store, ["true"])
    path = tmp_path / "e.jsonl"
    huge = b'{"type": "info", "message": "' + b"x" * 3000 + b'"}\n'
    path.write_bytes(_line(name="a", value=1, step=1) + huge + _line(name="a", value=2, step=2))
    feed = ingest.Feed(jid, path, 0, tmp_path)
    for _ in range(5):
        batch = ingest.collect([feed], max_bytes_per_job=1024)
        with store.write() as s:
            ingest.write(s, batch)
        feed.offset = batch.offsets.get(jid, feed.offset)
    assert _rows(store, jid) == [("a", 1, 1.0), ("a", 2, 2.0)]
    j = _job(store, jid)
    assert j.events_offset == path.stat().st_size and j.events_skipped == 1 and "longer than" in j.events_note


def test_a_cut_or_replaced_file_is_read_again_without_duplicates(tmp_path, store) -> None:
    jid = submit(store, ["true"])
    path = tmp_path / "e.jsonl"
    first = _line(name="a", value=1, step=1) + _line(name="a", value=2, step=2)
    path.write_bytes(first)
    feed = ingest.Feed(jid, path, 0, tmp_path)
    _ingest_all(store, [feed])
    # truncated, then rewritten shorter with one old and one new line
    path.write_bytes(_line(name="a", value=1, step=1) + _line(name="b", value=3, step=1)[:0])
    path.write_bytes(_line(name="b", value=3, step=1))
    _ingest_all(store, [feed])
    assert _rows(store, jid) == [("a", 1, 1.0), ("a", 2, 2.0), ("b", 1, 3.0)]
    # replaced by another file (another inode) holding the old lines and more: read from 0, no duplicates
    tmp = tmp_path / "new.jsonl"
    tmp.write_bytes(_line(name="b", value=3, step=1) + _line(name="b", value=4, step=2) + _line(name="b", value=5, step=3))
    os.replace(tmp, path)
    _ingest_all(store, [feed])
    assert _rows(store, jid) == [("a", 1, 1.0), ("a", 2, 2.0), ("b", 1, 3.0), ("b", 2, 4.0), ("b", 3, 5.0)]
    assert _job(store, jid).events_offset == path.stat().st_size


def test_the_last_line_without_newline_is_read_once_the_job_ended(tmp_path, store) -> None:
    jid = submit(store, ["true"])
    path = tmp_path / "e.jsonl"
    path.write_bytes(_line(name="a", value=1, step=1) + _line(name="final", value=9)[:-1])
    feed = ingest.Feed(jid, path, 0, tmp_path)
    _ingest_all(store, [feed])
    assert _rows(store, jid) == [("a", 1, 1.0)], "while it runs the line may still be half written"
    feed.final = True
    _ingest_all(store, [feed])
    _ingest_all(store, [feed])
    assert _rows(store, jid) == [("a", 1, 1.0), ("final", None, 9.0)]


def test_a_fifo_events_file_is_refused_without_blocking(tmp_path, store) -> None:
    jid = submit(store, ["true"])
    path = tmp_path / "e.jsonl"
    os.mkfifo(path)
    batch = ingest.collect([ingest.Feed(jid, path, 0, tmp_path)])  # would block forever on a plain open
    assert jid in batch.refused
    with store.write() as s:
        ingest.write(s, batch)
    j = _job(store, jid)
    assert j.events_skipped == 1 and "not a regular file" in j.events_note


def test_metric_count_is_exact_after_many_rounds(tmp_path, store) -> None:
    jid = submit(store, ["true"])
    path = tmp_path / "e.jsonl"
    feed = ingest.Feed(jid, path, 0, tmp_path)
    with open(path, "ab") as f:
        for i in range(300):
            f.write(_line(name="m", value=i, step=i))
            if i % 37 == 0:
                f.flush()
                _ingest_all(store, [feed])
    _ingest_all(store, [feed])
    with store.read() as s:
        assert s.execute(select(func.count()).select_from(Metric).where(Metric.job_id == jid)).scalar_one() == 300
