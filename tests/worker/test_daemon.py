"""The worker as a daemon: `labdeck worker start|stop|status`, starting on demand from `submit`,
one worker per home, graceful and immediate stops, surviving the terminal that started it, and
many processes using the store at once without "database is locked"."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from worker_helpers import (
    PY,
    ProcWorker,
    child_env,
    job,
    pid_alive,
    status,
    submit,
    wait_for,
    wait_status,
    write_script,
)

from engine.control import lock_owner_pid, worker_alive

pytestmark = pytest.mark.timeout(120)


def labdeck(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "cli", "--home", str(home), *args], env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def spec_file(tmp_path: Path, command: list[str], **fields) -> Path:  # noqa: ANN003
    data = {"experiment": "d", "name": "j", "kind": "command", "command": command, **fields}
    path = tmp_path / f"spec{len(list(tmp_path.glob('spec*')))}.json"
    path.write_text(json.dumps(data))
    return path


def test_start_status_stop(tmp_path, home, store):
    r = labdeck(home, "worker", "start", "--grace", "1", "--gpus", "0,2")
    assert r.returncode == 0 and r.stdout.startswith("ok: worker"), r.stdout + r.stderr
    assert worker_alive(home)
    pid = lock_owner_pid(home)
    # its own session without a controlling terminal: no terminal's SIGHUP reaches it
    import psutil

    assert os.getsid(pid) != os.getsid(0) and psutil.Process(pid).terminal() is None
    r = labdeck(home, "worker", "start")
    assert "already running" in r.stdout and lock_owner_pid(home) == pid
    r = labdeck(home, "worker", "status")
    assert "online" in r.stdout and f"pid {pid}" in r.stdout, r.stdout
    st = json.loads(labdeck(home, "worker", "status", "--json").stdout)
    assert st["alive"] and st["online"] and st["state"] == "running" and st["gpus"] == "0,2"
    from db.queue import get_setting
    from engine.control import GPUS_KEY

    with store.read() as s:  # remembered for workers started on demand later
        assert get_setting(s, GPUS_KEY) == "0,2"
    release = tmp_path / "release"
    slow = write_script(tmp_path, "slow.py", f"""
        import os, time
        while not os.path.exists({str(release)!r}):
            time.sleep(0.05)
    """)
    a = submit(store, script=slow)
    wait_status(store, a, "running")
    r = labdeck(home, "worker", "stop")
    assert "1 running job(s) finish first" in r.stdout, r.stdout
    b = submit(store, script=slow)
    wait_for(lambda: worker_row_state(store) == "stopping", what="the worker to take the stop request")
    assert worker_alive(home)
    release.touch()
    wait_status(store, a, "succeeded")  # recorded: the worker waited for the running job (nothing else records it)
    wait_for(lambda: not worker_alive(home), timeout=10, what="the worker to exit")
    assert status(store, b) == "queued"  # a stopping worker starts nothing new
    r = labdeck(home, "worker", "status")
    assert "no worker running" in r.stdout
    assert (home / "worker.log").exists() and "stop requested" in (home / "worker.log").read_text()


def test_stop_now_cancels_running_jobs(tmp_path, home, store):
    ProcWorker(home)
    wait_for(lambda: worker_alive(home), what="the worker")
    slow = write_script(tmp_path, "slow.py", "import time; time.sleep(60)")
    a = submit(store, script=slow)
    wait_status(store, a, "running")
    r = labdeck(home, "worker", "stop", "--now")
    assert r.returncode == 0 and "worker stopped" in r.stdout, r.stdout + r.stderr
    assert status(store, a) == "cancelled"
    assert "--now" in job(store, a).failure_detail


def test_submit_starts_a_worker_when_none_is_alive(tmp_path, home, store):
    spec = spec_file(tmp_path, [PY, "-c", "print('hello')"])
    r = labdeck(home, "submit", str(spec))
    assert r.returncode == 0, r.stderr
    jid = int(r.stdout.split()[0])
    assert worker_alive(home)
    wait_status(store, jid, "succeeded")
    pid = lock_owner_pid(home)
    r = labdeck(home, "submit", str(spec))  # a second submit reuses it
    wait_status(store, int(r.stdout.split()[0]), "succeeded")
    assert lock_owner_pid(home) == pid
    labdeck(home, "worker", "stop", "--wait")
    assert not worker_alive(home)


def test_one_worker_per_home_and_jobs_do_not_hold_the_lock(tmp_path, home, store):
    w = ProcWorker(home)
    wait_for(lambda: worker_alive(home), what="the worker")
    second = subprocess.run([PY, "-m", "engine.daemon", "--home", str(home)], env=child_env(),
                            capture_output=True, text=True, timeout=30)
    assert "busy" in second.stdout and second.returncode == 0
    began = tmp_path / "began"
    slow = write_script(tmp_path, "slow.py", f"import time; open({str(began)!r}, 'w').close(); time.sleep(3)")
    a = submit(store, script=slow)
    # `running` is set at the claim; kill only once the job's own process runs (a kill between the
    # claim and the start gate rightly ends it `interrupted`, never started: the crash trials cover that)
    wait_for(began.exists, timeout=30, what="the job to begin")
    w.kill9()
    assert not worker_alive(home)  # the job's launcher lives on, but the lock is free
    assert pid_alive(job(store, a).pid)
    w2 = ProcWorker(home)
    wait_status(store, a, "succeeded", timeout=15)  # adopted by the new worker
    w2.stop()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_closing_the_terminal_does_not_stop_jobs(tmp_path, home, store):
    slow = write_script(tmp_path, "slow.py", """
        import time
        from engine.events import Reporter
        r = Reporter()
        for i in range(30):
            r.metric("m", i, step=i)
            time.sleep(0.1)
    """)
    spec = spec_file(tmp_path, [PY, str(slow)])
    sock = f"labdeck-test-{os.getpid()}"
    # The terminal: a tmux session whose program submits a job (which starts the worker) and waits.
    term = write_script(tmp_path, "term.py", f"""
        import os, subprocess, sys, time
        os.environ["PYTHONPATH"] = {child_env()['PYTHONPATH']!r}
        subprocess.run([sys.executable, "-m", "cli", "--home", {str(home)!r}, "submit", {str(spec)!r}])
        time.sleep(120)
    """)
    subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-s", "t", PY, str(term)],
                   check=True, timeout=30)
    try:
        jid = wait_for(lambda: store_ids(store), timeout=30, what="the job")[0]
        wait_status(store, jid, "running", timeout=30)
        worker = lock_owner_pid(home)
        assert worker and worker_alive(home)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], timeout=30)
    # the job ends after the terminal closed; only a live worker records it, and it is still the same one
    wait_status(store, jid, "succeeded", timeout=30)
    assert worker_alive(home) and pid_alive(worker) and lock_owner_pid(home) == worker
    from worker_helpers import metrics

    assert len(metrics(store, jid)) == 30
    labdeck(home, "worker", "stop", "--wait")


def worker_row_state(store):  # noqa: ANN001
    from sqlalchemy import select

    from db.models import Worker

    with store.read() as s:
        return s.execute(select(Worker.state).order_by(Worker.id.desc())).scalars().first()


def store_ids(store):  # noqa: ANN001
    from sqlalchemy import select

    from db.models import Job

    with store.read() as s:
        return list(s.execute(select(Job.id)).scalars())


SUBMITTER = """
import sys, time, traceback
from db.session import Store
from db.queue import enqueue, JobDraft
home, seconds, who = sys.argv[1], float(sys.argv[2]), sys.argv[3]
store = Store(home)
n = errors = 0
end = time.time() + seconds
spec = {"kind": "command", "command": ["true"], "experiment": "c", "name": who}
while time.time() < end:
    try:
        # Mostly GPU jobs that wait (the box has no GPU): writes and planning without a process
        # per job; every 40th runs, so the worker also claims, spawns and records.
        gpus = 0 if n % 40 == 0 else 1
        with store.write() as s:
            enqueue(s, [JobDraft(experiment="c", name=who, kind="command", spec=spec, gpus_requested=gpus)])
        n += 1
    except Exception:
        errors += 1
        traceback.print_exc()
    time.sleep(0.02)
print(n, errors)
"""

READER = """
import sys, time, traceback
from db.session import Store
from db.queries import list_jobs, worker_state, count_jobs, gpu_snapshot, latest_metrics
home, seconds = sys.argv[1], float(sys.argv[2])
store = Store(home)
n = errors = 0
end = time.time() + seconds
while time.time() < end:
    try:
        with store.read() as s:
            rows = list_jobs(s, limit=200)
            worker_state(s); count_jobs(s); gpu_snapshot(s)
            latest_metrics(s, [r.id for r in rows])
        n += 1
    except Exception:
        errors += 1
        traceback.print_exc()
    time.sleep(0.02)
print(n, errors)
"""

METRIC_JOB = """
from engine.events import Reporter
r = Reporter()
for i in range(200):
    r.metric("m", i, step=i)
"""


def concurrency(tmp_path: Path, home: Path, store, seconds: float) -> None:  # noqa: ANN001
    sub = write_script(tmp_path, "sub.py", SUBMITTER)
    rd = write_script(tmp_path, "read.py", READER)
    mj = write_script(tmp_path, "mj.py", METRIC_JOB)
    for _ in range(5):
        submit(store, script=mj, name="metrics")
    w = ProcWorker(home, "--cpu-slots", "4")
    procs = [subprocess.Popen([PY, str(sub), str(home), str(seconds), f"s{i}"], env=child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    procs.append(subprocess.Popen([PY, str(rd), str(home), str(seconds)], env=child_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=seconds + 60) for p in procs]
    from sqlalchemy import func, select

    from db.models import Job

    def settled():
        with store.read() as s:
            return s.execute(select(func.count()).where(Job.status.in_(["queued", "running"]),
                                                        Job.gpus_requested == 0)).scalar_one() == 0

    wait_for(settled, timeout=120, interval=0.2, what="the queue to drain")
    w.stop()
    log = (home / "test-worker.log").read_text()
    text = "\n".join(o + e for o, e in outs) + log
    assert "database is locked" not in text, text[-3000:]
    assert "round failed" not in log, log[-3000:]
    submitted = sum(int(o.split()[0]) for o, _ in outs[:4])
    assert all(o.split()[1] == "0" for o, _ in outs), outs
    assert submitted > 4 * seconds  # they really ran concurrently with the worker
    assert int(outs[4][0].split()[0]) > seconds  # and so did the reader
    with store.read() as s:
        st = dict(s.execute(select(Job.status, func.count()).where(Job.gpus_requested == 0).group_by(Job.status)).all())
        waiting = s.execute(select(func.count()).where(Job.gpus_requested == 1, Job.status == "queued")).scalar_one()
    assert {getattr(k, "value", k) for k in st} == {"succeeded"}, st
    assert waiting > 0


def test_concurrent_submitters_worker_and_reader(tmp_path, home, store):
    concurrency(tmp_path, home, store, 10.0)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_concurrent_submitters_worker_and_reader_30s(tmp_path, home, store):
    concurrency(tmp_path, home, store, 30.0)
