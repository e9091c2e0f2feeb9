"""The worker running real command jobs: life cycle, run folders, dependencies, priorities,
failure classification, retries, time limits and cancel of a whole process tree."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from worker_helpers import (
    PY,
    ThreadWorker,
    job,
    metrics,
    pid_alive,
    processes_of_run,
    status,
    submit,
    wait_for,
    wait_status,
    write_script,
)

from db.queue import request_cancel, set_queue_state

pytestmark = pytest.mark.timeout(60)

METRICS_JOB = """
import os, sys, time
from engine.events import Reporter
r = Reporter()
n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
for i in range(n):
    r.metric("loss", 1.0 / (i + 1), step=i)
    r.progress(i + 1, n)
print("done", os.environ["LABDECK_JOB_ID"], flush=True)
r.metric("final", 0.5)
r.artifact("file", "outputs/result.txt")
open(os.path.join(os.environ["LABDECK_RUN_DIR"], "outputs", "result.txt"), "w").write("ok")
"""


def test_queued_running_succeeded_with_metrics(tmp_path, store, home):
    script = write_script(tmp_path, "m.py", METRICS_JOB)
    jid = submit(store, [PY, str(script), "20"])
    assert status(store, jid) == "queued"
    with ThreadWorker(home):
        wait_status(store, jid, "succeeded")
    row = job(store, jid)
    assert row.started_at and row.finished_at and row.started_at >= row.queued_at
    assert row.exit_code == 0 and row.failure_reason is None
    assert row.progress_done == 20 and row.progress_total == 20
    steps = [s for name, s, _ in metrics(store, jid, "loss")]
    assert steps == list(range(20))  # every metric once, in order
    assert metrics(store, jid, "final") == [("final", None, 0.5)]
    assert row.events_offset == os.path.getsize(os.path.join(row.run_dir, "events.jsonl"))
    assert "done" in row.log_tail


def test_run_folder_environment_and_permissions(tmp_path, store, home):
    script = write_script(tmp_path, "env.py", """
        import json, os
        keys = ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "LABDECK_EVENTS", "LABDECK_RUN_DIR",
                "LABDECK_JOB_ID", "PYTHONUNBUFFERED", "PYTORCH_CUDA_ALLOC_CONF", "MY_VAR"]
        print(json.dumps({k: os.environ.get(k) for k in keys}))
        print("cwd", os.getcwd())
    """)
    jid = submit(store, script=script, env={"MY_VAR": "x"})
    with ThreadWorker(home):
        wait_status(store, jid, "succeeded")
    rd = job(store, jid).run_dir
    for name in ("spec.json", "events.jsonl", "log.txt", "exit.json", "env.json"):
        assert os.path.isfile(os.path.join(rd, name)), name
        assert stat.S_IMODE(os.stat(os.path.join(rd, name)).st_mode) == 0o600, name
    assert os.path.isdir(os.path.join(rd, "outputs"))
    assert stat.S_IMODE(os.stat(rd).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "labdeck.db").st_mode) == 0o600
    log = open(os.path.join(rd, "log.txt")).read().splitlines()
    seen = json.loads(log[0])
    assert seen == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                    "LABDECK_EVENTS": f"{rd}/events.jsonl", "LABDECK_RUN_DIR": rd, "LABDECK_JOB_ID": str(jid),
                    "PYTHONUNBUFFERED": "1", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "MY_VAR": "x"}
    assert log[1] == f"cwd {rd}"
    spec = json.load(open(os.path.join(rd, "spec.json")))
    assert spec["kind"] == "command" and spec["env"] == {"MY_VAR": "x"}
    env = json.load(open(os.path.join(rd, "env.json")))
    assert env["python"] and env["hostname"] and "packages" in env and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["labdeck_git"] is None or len(env["labdeck_git"]["commit"]) == 40
    ex = json.load(open(os.path.join(rd, "exit.json")))
    assert ex["returncode"] == 0 and ex["started"] is True and ex["signal"] is None


def test_dependency_chain_runs_in_order(tmp_path, store, home):
    script = write_script(tmp_path, "t.py", "import time; print(time.time())")
    a = submit(store, script=script, name="a")
    b = submit(store, script=script, name="b", after=[a])
    c = submit(store, script=script, name="c", after=[b])
    with ThreadWorker(home):
        wait_status(store, c, "succeeded")
    ja, jb, jc = job(store, a), job(store, b), job(store, c)
    assert ja.finished_at <= jb.started_at and jb.finished_at <= jc.started_at


def test_failed_dependency_skips_the_chain(tmp_path, store, home):
    bad = write_script(tmp_path, "bad.py", "import sys; print('boom'); sys.exit(2)")
    ok = write_script(tmp_path, "ok.py", "pass")
    a = submit(store, script=bad, name="a")
    b = submit(store, script=ok, name="b", after=[a])
    c = submit(store, script=ok, name="c", after=[b])
    with ThreadWorker(home):
        wait_status(store, c, "skipped")
    ra, rb, rc = job(store, a), job(store, b), job(store, c)
    assert status(store, a) == "failed" and ra.failure_reason == "nonzero_exit" and ra.exit_code == 2
    assert "exit code 2" in ra.failure_detail and "boom" in ra.log_tail
    assert status(store, b) == "skipped" and rb.failure_reason == "dependency"
    assert f"job {a} (a) ended failed" in rb.failure_detail
    assert f"job {b} (b) ended skipped" in rc.failure_detail
    assert rb.started_at is None and rc.started_at is None


def test_priority_then_oldest(tmp_path, store, home):
    script = write_script(tmp_path, "t.py", "import time; time.sleep(0.05)")
    with store.write() as s:
        set_queue_state(s, "paused")
    low = submit(store, script=script, name="low", priority=-1)
    old = submit(store, script=script, name="old")
    new = submit(store, script=script, name="new")
    high = submit(store, script=script, name="high", priority=5)
    with ThreadWorker(home, cpu_slots=1) as w:
        # the worker has read the pause and gone on to a later round (a new heartbeat): any start would have happened
        wait_for(lambda: w.daemon.queue_state == "paused" and w.daemon._next_heartbeat > 0, what="the pause to be read")
        seen = w.daemon._next_heartbeat
        wait_for(lambda: w.daemon._next_heartbeat > seen, what="a later worker round")
        assert all(status(store, j) == "queued" for j in (low, old, new, high))  # paused: nothing starts
        with store.write() as s:
            set_queue_state(s, "running")
        for j in (low, old, new, high):
            wait_status(store, j, "succeeded")
    order = sorted((job(store, j).started_at, j) for j in (low, old, new, high))
    assert [j for _, j in order] == [high, old, new, low]
    # one CPU slot: never two at once
    spans = sorted((job(store, j).started_at, job(store, j).finished_at) for j in (low, old, new, high))
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(3))


def test_drain_finishes_running_and_starts_nothing(tmp_path, store, home):
    slow = write_script(tmp_path, "slow.py", "import time; time.sleep(1.0)")
    a = submit(store, script=slow)
    with ThreadWorker(home) as w:
        wait_status(store, a, "running")
        with store.write() as s:
            set_queue_state(s, "draining")
        b = submit(store, script=slow)
        wait_status(store, a, "succeeded")
        w.wait_rounds(3)  # the round that recorded a's end, and two more: any of them would have started b
        assert status(store, b) == "queued"
        with store.write() as s:
            set_queue_state(s, "running")
        wait_status(store, b, "succeeded")


def test_classified_failures(tmp_path, store, home):
    oom = write_script(tmp_path, "oom.py", """
        import sys
        print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
        sys.exit(1)
    """)
    sig = write_script(tmp_path, "sig.py", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    reported = write_script(tmp_path, "rep.py", """
        import sys
        from engine.events import Reporter
        Reporter().error("bad_input", "column 'text' missing")
        sys.exit(7)
    """)
    garbage = write_script(tmp_path, "garbage.py", """
        import os
        with open(os.environ["LABDECK_EVENTS"], "a") as f:
            f.write("not json\\n[1,2]\\n" + '{"type": "metric", "name": "x", "value": "NaN?"}\\n')
            f.write('{"type": "metric", "name": "ok", "value": 1.5, "step": 1}\\n{"partial": ')
    """)
    ids = {
        "oom": submit(store, script=oom),
        "sig": submit(store, script=sig),
        "rep": submit(store, script=reported),
        "spawn": submit(store, ["/nonexistent/program", "--flag"]),
        "garbage": submit(store, script=garbage),
    }
    with ThreadWorker(home):
        for j in ids.values():
            wait_status(store, j)
    r = {k: job(store, j) for k, j in ids.items()}
    assert (status(store, ids["oom"]), r["oom"].failure_reason) == ("failed", "cuda_oom")
    assert (status(store, ids["sig"]), r["sig"].failure_reason, r["sig"].exit_signal) == ("failed", "signal", 9)
    assert "SIGKILL" in r["sig"].failure_detail
    assert (r["rep"].failure_reason, r["rep"].exit_code) == ("bad_input", 7)
    assert "column 'text' missing" in r["rep"].failure_detail
    assert (status(store, ids["spawn"]), r["spawn"].failure_reason) == ("failed", "spawn_error")
    assert "/nonexistent/program" in r["spawn"].failure_detail
    # garbage lines are skipped, the good metric is kept, the job still succeeds
    assert status(store, ids["garbage"]) == "succeeded"
    assert metrics(store, ids["garbage"]) == [("ok", 1, 1.5)]


def test_retry_policy_makes_a_linked_new_attempt(tmp_path, store, home):
    marker = tmp_path / "attempts"
    flaky = write_script(tmp_path, "flaky.py", f"""
        import os, sys
        with open({str(marker)!r}, "a") as f:
            f.write("x")
        n = os.path.getsize({str(marker)!r})
        if n < 3:
            print("CUDA out of memory (attempt %d)" % n, file=sys.stderr)
            sys.exit(1)
    """)
    after = write_script(tmp_path, "after.py", "pass")
    first = submit(store, script=flaky, retry={"max": 3, "on": ["cuda_oom"]})
    down = submit(store, script=after, after=[first])
    never = submit(store, script=write_script(tmp_path, "f.py", "import sys; sys.exit(1)"),
                   retry={"max": 2, "on": ["cuda_oom"]})  # fails with another reason: no retry
    with ThreadWorker(home):
        wait_status(store, down, "succeeded", timeout=30)
        wait_status(store, never)
    from sqlalchemy import select

    from db.models import Job

    with store.read() as s:
        chain = s.execute(select(Job.id, Job.attempt, Job.parent_id, Job.status).where(Job.name == "job")
                          .order_by(Job.id)).all()
    attempts = [(a, p, st.value if hasattr(st, "value") else st) for i, a, p, st in chain if i == first or p]
    assert [a for a, _, _ in attempts] == [1, 2, 3]
    assert [st for _, _, st in attempts] == ["failed", "failed", "succeeded"]
    assert attempts[1][1] == first
    assert marker.read_text() == "xxx"
    assert status(store, never) == "failed"
    assert job(store, never).failure_reason == "nonzero_exit"


def test_time_limit(tmp_path, store, home):
    script = write_script(tmp_path, "sleep.py", "import time; print('start', flush=True); time.sleep(60)")
    jid = submit(store, script=script, time_limit=1)
    t0 = time.time()
    with ThreadWorker(home, kill_grace_s=1.0):
        wait_status(store, jid, timeout=15)
    row = job(store, jid)
    assert (status(store, jid), row.failure_reason) == ("failed", "time_limit")
    assert row.finished_at - row.started_at < 5
    assert time.time() - t0 < 10
    assert not processes_of_run(row.run_dir)


CANCEL_TREE = """
import os, signal, subprocess, sys, time
pids = os.path.join(os.environ["LABDECK_RUN_DIR"], "pids")
signal.signal(signal.SIGTERM, signal.SIG_IGN)
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
kids = [subprocess.Popen([sys.executable, "-c", stubborn]),
        subprocess.Popen([sys.executable, "-c", "import os, time; os.setpgid(0, 0); time.sleep(120)"]),
        subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(120)"]),
        subprocess.Popen([sys.executable, "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)']); time.sleep(120)"])]
time.sleep(0.5)
with open(pids, "w") as f:
    f.write(" ".join(str(p) for p in [os.getpid()] + [k.pid for k in kids]))
print("tree ready", flush=True)
time.sleep(120)
"""


def test_cancel_kills_the_whole_tree(tmp_path, store, home):
    script = write_script(tmp_path, "tree.py", CANCEL_TREE)
    jid = submit(store, script=script)
    with ThreadWorker(home, kill_grace_s=1.0):
        wait_status(store, jid, "running")
        rd = job(store, jid).run_dir
        wait_for(lambda: os.path.exists(os.path.join(rd, "pids")), what="the tree")
        # launcher, job, 4 children, 1 grandchild
        def whole_tree():
            found = processes_of_run(rd)
            return found if len(found) >= 7 else None

        tree = wait_for(whole_tree, timeout=30, what="7 processes")
        with store.write() as s:
            assert request_cancel(s, jid).value == "running"
        t0 = time.time()
        wait_status(store, jid, "cancelled", timeout=15)
        took = time.time() - t0
    row = job(store, jid)
    assert row.failure_reason == "cancelled"
    assert took < 8
    assert [p for p in tree if pid_alive(p)] == []
    assert processes_of_run(rd) == []


def test_cancel_of_queued_job_never_runs(tmp_path, store, home):
    """The queue runs: the cancelled job (first in line, higher priority) is passed over, the next one runs."""
    marker = tmp_path / "ran"
    script = write_script(tmp_path, "t.py", f"open({str(marker)!r}, 'a').write('x')")
    jid = submit(store, script=script, priority=5)
    after = submit(store, script=write_script(tmp_path, "ok.py", "pass"))
    with store.write() as s:
        request_cancel(s, jid)
    with ThreadWorker(home, cpu_slots=1):
        wait_status(store, after, "succeeded")
    assert status(store, jid) == "cancelled" and job(store, jid).run_dir == ""
    assert not marker.exists()


def test_leftover_background_process_is_stopped_when_the_job_ends(tmp_path, store, home):
    script = write_script(tmp_path, "bg.py", """
        import os, subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open(os.path.join(os.environ["LABDECK_RUN_DIR"], "bg"), "w").write(str(p.pid))
    """)
    jid = submit(store, script=script)
    with ThreadWorker(home):
        wait_status(store, jid, "succeeded")
        rd = job(store, jid).run_dir
        bg = int(open(os.path.join(rd, "bg")).read())
        wait_for(lambda: not pid_alive(bg), timeout=10, what="the background process to be stopped")


def test_a_failing_job_never_takes_the_worker_down(tmp_path, store, home):
    """A spec the launcher cannot use, a job that deletes its own run folder: the worker goes on."""
    vandal = write_script(tmp_path, "vandal.py", """
        import os, shutil
        shutil.rmtree(os.environ["LABDECK_RUN_DIR"])
    """)
    ok = write_script(tmp_path, "ok.py", "pass")
    a = submit(store, script=vandal)
    with ThreadWorker(home) as w:
        wait_status(store, a)
        b = submit(store, script=ok)
        wait_status(store, b, "succeeded")
        assert w.thread.is_alive()


ENV_PROBE = """
import json, os
print(json.dumps({k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}))
"""


def _threads_seen(store, jid):
    rd = job(store, jid).run_dir
    seen = json.loads(open(os.path.join(rd, "log.txt")).read().splitlines()[0])
    recorded = json.load(open(os.path.join(rd, "env.json")))["env"]
    return seen, {k: recorded.get(k) for k in seen}


def test_cpu_jobs_share_the_cpus_among_the_cpu_slots(tmp_path, store, home, monkeypatch):
    """Two CPU jobs on two cores with torch's default (one thread per core each) oversubscribe the box
    and run about twice as slowly; each CPU-only job gets CPUs / cpu slots threads instead, unless
    the job's env or the worker's own environment says otherwise."""
    from engine.rundir import usable_cpus

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    script = write_script(tmp_path, "threads.py", ENV_PROBE)
    capped = submit(store, script=script, name="capped")
    own = submit(store, script=script, name="own", env={"OMP_NUM_THREADS": "3"})
    want = str(max(1, usable_cpus() // 2))
    with ThreadWorker(home, cpu_slots=2):
        wait_status(store, capped, "succeeded")
        wait_status(store, own, "succeeded")
    assert _threads_seen(store, capped) == ({"OMP_NUM_THREADS": want, "MKL_NUM_THREADS": want},) * 2
    assert _threads_seen(store, own)[0] == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": want}

    monkeypatch.setenv("MKL_NUM_THREADS", "7")  # the worker's environment wins over the share
    later = submit(store, script=script, name="later")
    with ThreadWorker(home, cpu_slots=2):
        wait_status(store, later, "succeeded")
    assert _threads_seen(store, later)[0] == {"OMP_NUM_THREADS": want, "MKL_NUM_THREADS": "7"}


def test_thread_share_arithmetic_and_gpu_jobs_untouched(tmp_path):
    from engine.rundir import cpu_job_threads, job_env

    assert [cpu_job_threads(s, 16) for s in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    assert cpu_job_threads(None, 16) is None  # no slot limit: nothing to share out
    assert job_env({}, 1, tmp_path, (), 0, 4)["OMP_NUM_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in job_env({}, 1, tmp_path, (0,), 0, 4)  # a GPU job keeps torch's default
    assert "OMP_NUM_THREADS" not in job_env({}, 1, tmp_path, (), 0, None)
