"""kill -9 the worker at random moments while jobs run, restart it, and check the invariants.

SQLite's crash testing in miniature. After every trial:

* `PRAGMA integrity_check` is ok;
* no job ran twice (each job's script appends its id to a shared file when it starts);
* no job is lost: every job ends in a terminal state;
* a job whose process kept running is adopted and ends `succeeded` with all its metrics, each once;
* a job whose process was killed too (kill -9 of its whole session while no worker watched)
  becomes `interrupted` (worker_lost) within 5 s of the restart;
* the only other way to end `interrupted` is never to have started (the worker died between the
  claim and opening the start gate), and then the script never ran.

20 trials run in the default suite with workers forked from the test process (a real process, killed
with SIGKILL, without an interpreter start-up per trial); 200 run under `-m slow`, a share of them
with `python -m engine.worker` as in production.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from worker_helpers import PY, ProcWorker, fork_worker, reap, submit, write_script

from db.models import Job, Metric
from db.session import Store
from engine.launcher import read_exit

JOB = """
import json, os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(os.environ["LABDECK_JOB_ID"] + "\\n")
from engine.events import Reporter
r = Reporter()
n, dt, fault = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ev = os.environ["LABDECK_EVENTS"]
def raw(b):
    with open(ev, "ab") as f:
        f.write(b)
for i in range(n):
    if fault == "unterminated" and i == n - 1:
        raw(json.dumps({"type": "metric", "name": "m", "value": i, "step": i}).encode())
        break
    r.metric("m", i, step=i)
    if fault == "poison":
        raw(b'{"type": "metric", "name": "m", "value": 1, "step": 18446744073709551616}\\n')
        raw(b'{"type": "metric", "name": "\\\\udcff", "value": 1, "step": 1, "t": NaN}\\n')
    if fault == "replay" and i == n // 2:
        open(ev, "wb").close()  # cut, then written again from the start
        for j in range(i + 1):
            r.metric("m", j, step=j)
    time.sleep(dt)
"""
# A fault injected into each trial besides the kill -9 (the slow test draws one per trial).
FAULTS = ("none", "poison", "unterminated", "replay", "clock_step", "sigchld")
M = 12
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted", "skipped"}


def _status(v) -> str:  # noqa: ANN001
    return v.value if hasattr(v, "value") else v


def crash_trial(root: Path, seed: int, proc_worker: bool = False, fault: str | None = None) -> dict[str, int]:
    rng = random.Random(seed)
    fault = fault or rng.choice(FAULTS)
    home = root / f"home{seed}"
    store = Store(home)
    starts = root / f"starts{seed}"
    script = write_script(root, "crashjob.py", JOB)
    n_jobs = rng.randint(2, 4)
    limit = {"time_limit": 3600} if fault == "clock_step" else {}
    ids = [submit(store, [PY, str(script), str(starts), str(M), str(rng.choice([0.02, 0.04])), fault], **limit)
           for _ in range(n_jobs)]

    def start():
        if proc_worker:
            return ProcWorker(home)
        if fault != "sigchld":
            return fork_worker(home)
        old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # inherited by the forked worker
        try:
            return fork_worker(home)
        finally:
            signal.signal(signal.SIGCHLD, old)

    def kill9(w) -> None:  # noqa: ANN001
        if proc_worker:
            w.kill9()
        else:
            os.kill(w, signal.SIGKILL)
            reap(w)

    w = start()
    if rng.random() < 0.5:
        # Half the trials kill at a random moment of the worker's start-up; the other half once a
        # job runs (on a loaded machine start-up alone can outlast the random window).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with store.read() as s:
                if s.execute(select(Job.id).where(Job.status == "running", Job.pid.is_not(None))).first():
                    break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.2))
    else:
        time.sleep(rng.uniform(0.0, 0.9 if not proc_worker else 2.0))
    kill9(w)

    # kill some running jobs too, while no worker watches
    victims: set[int] = set()
    with store.read() as s:
        running = s.execute(select(Job.id, Job.pid).where(Job.status == "running", Job.pid.is_not(None))).all()
    for jid, pid in running:
        if rng.random() < 0.4:
            try:
                os.killpg(pid, signal.SIGKILL)
                victims.add(jid)
            except ProcessLookupError:
                pass
    time.sleep(rng.uniform(0.0, 0.3))
    if fault == "clock_step":  # the wall clock stepped an hour while no worker watched
        _step_the_clock(store)

    t_restart = time.time()
    w = start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with store.read() as s:
            states = dict(s.execute(select(Job.id, Job.status)).all())
        if all(_status(v) in TERMINAL for v in states.values()):
            break
        time.sleep(0.05)
    if proc_worker:
        w.stop()
    else:
        os.kill(w, signal.SIGTERM)
        reap(w)

    # The restarted worker's own start (registration), not the moment we asked for it: starting an
    # interpreter on a loaded machine can take seconds, which says nothing about reconciling.
    from db.models import Worker

    with store.read() as s:
        t_restart = max(t_restart, s.execute(select(func.max(Worker.started_at))).scalar_one() or 0.0)

    # ---- invariants
    raw = sqlite3.connect(home / "labdeck.db")
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    ran = Counter(int(x) for x in starts.read_text().split()) if starts.exists() else Counter()
    assert all(n == 1 for n in ran.values()), f"a job ran twice: {ran}"
    outcome = Counter()
    with store.read() as s:
        jobs = {j.id: (_status(j.status), j.failure_reason, j.finished_at, j.run_dir)
                for j in s.execute(select(Job)).scalars()}
        counts = dict(s.execute(select(Metric.job_id, func.count()).group_by(Metric.job_id)).all())
        distinct = dict(s.execute(select(Metric.job_id, func.count(func.distinct(Metric.step))).group_by(Metric.job_id)).all())
    assert set(jobs) == set(ids), "a job appeared or vanished"
    for jid, (st, reason, finished, rd) in jobs.items():
        assert st in TERMINAL, f"job {jid} left {st} (seed {seed})"
        assert counts.get(jid, 0) == distinct.get(jid, 0), f"job {jid}: a metric was ingested twice"
        rec = read_exit(rd) if rd else None
        if st == "succeeded":
            assert counts.get(jid) == M, f"job {jid} succeeded with {counts.get(jid)} of {M} metrics (seed {seed})"
            assert ran[jid] == 1
        elif jid in victims and not (rec and rec.get("returncode") == 0):
            assert (st, reason) == ("interrupted", "worker_lost"), f"victim {jid}: {st}/{reason} (seed {seed})"
            assert finished - t_restart < 5, f"victim {jid} took {finished - t_restart:.1f}s"
        else:
            # never started: the worker died between claim and the start gate
            assert (st, reason) == ("interrupted", "worker_lost"), f"job {jid}: {st}/{reason} (seed {seed})"
            assert ran[jid] == 0, f"job {jid} ran but ended {st} (seed {seed})"
            assert finished - t_restart < 5
        outcome[st if jid not in victims else f"victim-{st}"] += 1
    store.dispose()
    outcome[f"fault-{fault}"] += 1
    return dict(outcome)


def _step_the_clock(store: Store) -> None:
    """What a restarted worker sees after a clock step: identities read through the stepped clock
    (psutil's create_time, as rows written before start ticks were kept) and wall-clock starts an
    hour further back than the time limit allows."""
    import psutil
    from sqlalchemy import update

    with store.write() as s:
        for jid, pid, started in s.execute(select(Job.id, Job.pid, Job.started_at).where(Job.status == "running")).all():
            try:
                created = psutil.Process(pid).create_time() + 3600.0 if pid else None
            except psutil.Error:
                created = 12345.0
            s.execute(update(Job).where(Job.id == jid).values(
                external_id="", pid_start_time=created, started_at=(started or time.time()) - 7200.0))


@pytest.mark.timeout(240)
def test_kill_worker_at_random_moments(tmp_path):
    total: Counter = Counter()
    for seed in range(20):
        total.update(crash_trial(tmp_path, seed))
    print(dict(total))
    assert total["succeeded"] > 0 and total["victim-interrupted"] > 0  # both paths were exercised


@pytest.mark.timeout(120)
def test_kill_production_worker_process(tmp_path):
    for seed in (1000, 1001):
        crash_trial(tmp_path, seed, proc_worker=True)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill_worker_200_trials(tmp_path):
    total: Counter = Counter()
    for seed in range(2000, 2200):
        total.update(crash_trial(tmp_path, seed, proc_worker=seed % 10 == 0))
    print(dict(total))


@pytest.mark.timeout(60)
def test_a_reused_pid_is_neither_adopted_nor_killed(tmp_path):
    """A `running` job whose recorded pid now belongs to another process (same pid, other start
    time) is not adopted: it becomes interrupted, and the stranger is left alone."""
    import subprocess

    from sqlalchemy import update
    from worker_helpers import ThreadWorker, job, status

    from db.queue import claim

    home = tmp_path / "home"
    store = Store(home)
    jid = submit(store, [PY, "-c", "pass"])
    stranger = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)  # leads a session, like a launcher
    try:
        rd = home / "runs" / str(jid)
        rd.mkdir(parents=True)
        with store.write() as s:
            assert claim(s, jid, run_dir=str(rd))
            s.execute(update(Job).where(Job.id == jid).values(pid=stranger.pid, pid_start_time=12345.0))
        with ThreadWorker(home):
            t0 = time.time()
            while status(store, jid) == "running" and time.time() - t0 < 10:
                time.sleep(0.05)
        row = job(store, jid)
        assert (status(store, jid), row.failure_reason) == ("interrupted", "worker_lost")
        assert stranger.poll() is None  # untouched
    finally:
        stranger.kill()
        stranger.wait()
