"""What every fault test shares: a real worker process, real jobs, and the invariants.

The invariants, checked after every fault:

* every job reaches a true final state (the one its command earned, not one the fault caused);
* no metric row is lost or duplicated (each job's rows are exactly the lines it wrote);
* no job runs twice (each job script appends its id to a `starts` file when it starts);
* `PRAGMA integrity_check` is ok;
* the worker keeps heartbeating while the fault happens.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from db.models import Job, Metric, Worker
from db.queue import enqueue
from db.session import Store
from engine.specfile import expand

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted", "skipped"}

# Lines a hostile or buggy job may write; none of them may cost another line.
POISON_LINES = [
    b'{"type": "metric", "name": "p", "value": 1.0, "step": 18446744073709551616}\n',
    b'{"type": "metric", "name": "\\udcff", "value": 1.0, "step": 1}\n',
    b'{"type": "metric", "name": "p", "value": NaN, "step": 1}\n',
    b'{"type": "metric", "name": "p", "value": 1, "step": 1, "t": Infinity}\n',
    b'{"type": "artifact", "kind": "\\ud800", "path": "x"}\n',
    b'{"type": "error", "reason": "\\udcff", "message": {"deep": [1, 2, NaN]}}\n',
    b'not json at all \xff\xfe\n',
    b'\n',
]

JOB = r'''
import json, os, sys, time
mode, starts, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(starts, "a") as f:
    f.write(os.environ["LABDECK_JOB_ID"] + "\n")
ev = os.environ["LABDECK_EVENTS"]
POISON = json.loads(os.environ.get("FAULT_POISON", "[]"))

def write(b):
    with open(ev, "ab") as f:
        f.write(b)

def line(i):
    return (json.dumps({"type": "metric", "name": "m", "value": float(i), "step": i, "t": time.time()}) + "\n").encode()

def wait_for(path):
    while not os.path.exists(path):
        time.sleep(0.02)

if mode == "good":
    for i in range(n):
        write(line(i))
        time.sleep(0.005)
elif mode == "poison":
    for i in range(n):
        write(line(i))
        write(POISON[i % len(POISON)].encode("latin-1"))
elif mode == "oversized":
    write(line(0))
    write(b'{"type": "info", "message": "' + b"x" * (9 << 20) + b'"}\n')
    for i in range(1, n):
        write(line(i))
elif mode == "truncated":
    for i in range(n // 2):
        write(line(i))
    wait_for(sys.argv[4])  # the test saw the first half in the store
    open(ev, "wb").close()  # cut to nothing, then written again from the start, as a restarted logger would
    for i in range(n):
        write(line(i))
elif mode == "unterminated":
    for i in range(n):
        write(line(i)[:-1] if i == n - 1 else line(i))
elif mode == "fifo":
    for i in range(n):
        write(line(i))
    wait_for(sys.argv[4])  # the test saw them in the store
    os.replace(ev, ev + ".old")
    os.mkfifo(ev)
elif mode == "fail":
    for i in range(n):
        write(line(i))
    sys.exit(3)
elif mode == "wait":
    for i in range(n // 2):
        write(line(i))
    wait_for(sys.argv[4])
    for i in range(n // 2, n):
        write(line(i))
elif mode == "fill":
    for i in range(n):
        write(line(i))
    wait_for(sys.argv[4])
    try:
        with open("outputs/fill", "wb") as f:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
    except OSError:
        pass
    open(sys.argv[5], "w").close()  # (outside the full filesystem) the disk is full now
    wait_for(sys.argv[6])
'''


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env["FAULT_POISON"] = json.dumps([b.decode("latin-1") for b in POISON_LINES])
    env.update(extra)
    return env


class Harness:
    """A home, a job script, a worker process, and the checks."""

    def __init__(self, root: Path, home: Path | None = None) -> None:
        self.root = root
        self.home = home or root / "home"
        self.store = Store(self.home)
        self.script = root / "faultjob.py"
        self.script.write_text(JOB)
        self.starts = root / "starts"
        self.worker: subprocess.Popen[bytes] | None = None
        self.expected: dict[int, int] = {}  # job id -> metric rows it must end with
        self.want: dict[int, str] = {}  # job id -> the final status its command earned

    def submit(self, mode: str, n: int, *extra: str, want: str = "succeeded", rows: int | None = None,
               **fields: Any) -> int:
        data: dict[str, Any] = {"experiment": "faults", "name": mode, "kind": "command",
                                "command": [PY, str(self.script), mode, str(self.starts), str(n), *extra]}
        data.update(fields)
        exp = expand(data)
        with self.store.write() as s:
            jid = enqueue(s, exp.drafts, resolve=exp.resolver())[0]
        self.expected[jid] = n if rows is None else rows
        self.want[jid] = want
        return jid

    def start_worker(self, preexec: Callable[[], None] | None = None, **env: str) -> None:
        log = open(self.root / "worker.out", "ab")  # noqa: SIM115
        self.worker = subprocess.Popen(  # noqa: S603
            [PY, "-m", "engine.worker", "--home", str(self.home), "--poll", "0.05", "--heartbeat", "0.3",
             "--grace", "1"], env=child_env(**env), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=preexec,  # noqa: PLW1509
        )

    def kill9(self) -> None:
        assert self.worker is not None
        os.kill(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def row(self, jid: int) -> Job:
        with self.store.read() as s:
            j = s.get(Job, jid)
            assert j is not None
            s.expunge(j)
            return j

    def status(self, jid: int) -> str:
        st = self.row(jid).status
        return st.value if hasattr(st, "value") else st

    def count(self, jid: int) -> int:
        with self.store.read() as s:
            return s.execute(select(func.count()).select_from(Metric).where(Metric.job_id == jid)).scalar_one()

    def wait(self, pred: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = pred()
            if value:
                return value
            if self.worker is not None and self.worker.poll() is not None:
                raise AssertionError(f"the worker exited ({self.worker.returncode}) while waiting for {what}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; worker log:\n{self.log_tail()}")

    def heartbeat(self) -> float:
        with self.store.read() as s:
            return s.execute(select(func.max(Worker.heartbeat_at))).scalar_one() or 0.0

    def assert_heartbeats(self) -> None:
        """The worker's heartbeat moves on: it is not wedged by whatever the jobs did."""
        first = self.heartbeat()
        self.wait(lambda: self.heartbeat() > first, 15, "the worker's next heartbeat")

    def log_tail(self) -> str:
        try:
            return (self.root / "worker.out").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def all_final(self) -> bool:
        return all(self.status(j) in TERMINAL for j in self.expected)

    def check(self) -> Counter[str]:
        """The invariants (see the module docstring); returns the statuses reached."""
        raw = sqlite3.connect(self.home / "labdeck.db")
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()
        ran = Counter(int(x) for x in self.starts.read_text().split()) if self.starts.exists() else Counter()
        assert all(n == 1 for n in ran.values()), f"a job ran twice: {ran}"
        seen: Counter[str] = Counter()
        with self.store.read() as s:
            for jid, rows in self.expected.items():
                j = s.get(Job, jid)
                st = j.status.value if hasattr(j.status, "value") else j.status
                assert st == self.want[jid], f"job {jid}: {st} ({j.failure_reason}: {j.failure_detail})\n{self.log_tail()}"
                got = s.execute(select(Metric.name, Metric.step).where(Metric.job_id == jid, Metric.name == "m")).all()
                assert len(got) == len(set(got)), f"job {jid}: a metric row was duplicated"
                assert len(got) == rows, f"job {jid}: {len(got)} of {rows} metric rows"
                seen[st] += 1
        return seen
