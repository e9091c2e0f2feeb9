"""The worker's parts on their own: outcome classification, event ingestion, the launcher,
process identity and group kill, the single-worker lock, and the import boundary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from worker_helpers import PY, child_env, pid_alive, submit, write_script

from db.models import JobStatus
from engine import ingest, outcome, process
from engine.control import WorkerLock, worker_alive
from engine.launcher import build_argv, read_exit

pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- outcome


def test_classification_table():
    c = outcome.classify
    assert c(kind="command", exit_record={"started": True, "returncode": 0}).status is JobStatus.succeeded
    o = c(kind="finetune", exit_record={"started": True, "returncode": 4})
    assert (o.status, o.reason) == (JobStatus.failed, "cuda_oom")
    o = c(kind="command", exit_record={"started": True, "returncode": 4})
    assert o.reason == "nonzero_exit"  # exit 4 means OOM only for engine jobs
    o = c(kind="score", exit_record={"started": True, "returncode": 3}, reported_error=("bad_input", "no file"))
    assert (o.reason, o.detail) == ("bad_input", "no file")
    o = c(kind="command", exit_record={"started": True, "returncode": -9, "signal": 9, "oom_killed": True})
    assert (o.reason, o.exit_signal) == ("signal", 9) and "OOM killer" in o.detail
    o = c(kind="command", exit_record={"started": True, "returncode": 1}, log_tail="torch.OutOfMemoryError: x")
    assert o.reason == "cuda_oom"
    o = c(kind="command", exit_record={"started": True, "returncode": 1}, stop_reason="time_limit")
    assert (o.status, o.reason) == (JobStatus.failed, "time_limit")
    o = c(kind="command", exit_record=None, stop_reason="cancel")
    assert o.status is JobStatus.cancelled
    o = c(kind="command", exit_record={"started": False, "detail": "gate closed"})
    assert (o.status, o.reason) == (JobStatus.interrupted, "worker_lost")
    o = c(kind="command", exit_record=None, died_while_away=True)
    assert (o.status, o.reason) == (JobStatus.interrupted, "worker_lost")
    o = c(kind="command", exit_record=None, launcher_returncode=-9)
    assert (o.status, o.reason, o.exit_signal) == (JobStatus.failed, "signal", 9)
    o = c(kind="command", exit_record={"started": True, "returncode": 127, "spawn_error": "not found"})
    assert o.reason == "spawn_error"


def test_retry_decision():
    failed = outcome.Outcome(JobStatus.failed, "cuda_oom", "")
    assert outcome.should_retry(failed, ["cuda_oom"], 2, 1)
    assert outcome.should_retry(failed, ["cuda_oom"], 2, 2)
    assert not outcome.should_retry(failed, ["cuda_oom"], 2, 3)
    assert not outcome.should_retry(failed, ["time_limit"], 2, 1)
    cancelled = outcome.Outcome(JobStatus.cancelled, "cancelled", "")
    assert not outcome.should_retry(cancelled, ["cancelled"], 5, 1)


def test_log_tail_keeps_last_lines_and_last_progress_redraw(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "10%\r50%\r100%\n")
    tail = outcome.read_log_tail(log, lines=3)
    assert tail == "line 98\nline 99\n100%"
    assert outcome.read_log_tail(tmp_path / "none") == ""


# ----------------------------------------------------------------------------- ingest


def test_ingest_reads_complete_lines_only_and_counts_garbage(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type":"metric","name":"a","value":1,"step":0,"t":1}\nnot json\n{"type":"metric"')
    feed = ingest.Feed(1, path, 0, tmp_path)
    b = ingest.collect([feed])
    assert b.metrics == [(1, "a", 0, 1.0, 1)] and b.bad_lines == {1: 1}
    assert b.offsets[1] == path.read_bytes().index(b"not json\n") + len(b"not json\n")
    with open(path, "ab") as f:
        f.write(b',"name":"b","value":2.5}\n{"type":"progress","done":3,"total":10,"eta_s":7}\n')
        f.write(b'{"type":"artifact","kind":"model","path":"outputs/m"}\n{"type":"error","reason":"cuda_oom","message":"m"}\n')
        f.write(b'{"type":"metric","name":"nan","value":"x"}\n{"type":"metric","name":"s","value":1,"step":true}\n')
    feed.offset = b.offsets[1]
    b = ingest.collect([feed])
    assert b.metrics == [(1, "b", None, 2.5, 0.0)]
    assert b.progress[1] == {"progress_done": 3.0, "progress_total": 10.0, "eta_s": 7.0}
    assert b.artifacts[0][:3] == (1, "model", str(tmp_path / "outputs/m"))
    assert b.errors[1] == ("cuda_oom", "m") and b.bad_lines == {1: 2}
    assert b.offsets[1] == path.stat().st_size


def test_ingest_rows_and_offset_commit_together(tmp_path, store):
    """A crash between reading and committing re-reads the same lines: nothing lost, nothing twice."""
    from sqlalchemy import func, select

    from db.models import Metric

    jid = submit(store, ["true"])
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"type": "metric", "name": "m", "value": i, "step": i}) + "\n" for i in range(1000)))
    feed = ingest.Feed(jid, path, 0, tmp_path)
    batch = ingest.collect([feed])
    with pytest.raises(RuntimeError):
        with store.write() as s:
            ingest.write(s, batch)
            raise RuntimeError("worker dies before commit")
    with store.read() as s:
        assert s.execute(select(func.count()).select_from(Metric)).scalar_one() == 0
    with store.write() as s:
        ingest.write(s, ingest.collect([feed]))
    with store.read() as s:
        assert s.execute(select(func.count()).select_from(Metric)).scalar_one() == 1000
        from db.models import Job

        assert s.get(Job, jid).events_offset == path.stat().st_size


# ----------------------------------------------------------------------------- launcher


def test_build_argv(tmp_path):
    rd = tmp_path
    argv, cwd = build_argv({"kind": "generate"}, rd, {"CUDA_VISIBLE_DEVICES": "0"})
    assert argv == [sys.executable, "-m", "engine.jobs", str(rd)] and cwd == rd
    argv, _ = build_argv({"kind": "finetune"}, rd, {"CUDA_VISIBLE_DEVICES": "0,3"})
    assert argv[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    assert argv[argv.index("--num_processes") + 1] == "2"
    assert int(argv[argv.index("--main_process_port") + 1]) > 0
    assert argv[-3:] == ["-m", "engine.jobs", str(rd)]
    spec = {"kind": "command", "command": ["python", "train.py", "--lr", "1"], "multi_gpu": "accelerate", "cwd": "/x"}
    argv, cwd = build_argv(spec, rd, {"CUDA_VISIBLE_DEVICES": "1,2,3"})
    assert argv[argv.index("--num_processes") + 1] == "3" and argv[-3:] == ["train.py", "--lr", "1"]
    assert str(cwd) == "/x"
    argv, _ = build_argv(spec, rd, {"CUDA_VISIBLE_DEVICES": "1"})  # one GPU: no accelerate
    assert argv == ["python", "train.py", "--lr", "1"]


def _launch(rd, gate: bytes | None):
    (rd / "spec.json").write_text(json.dumps({"kind": "command", "command": [PY, "-c", "print('hi')"]}))
    p = subprocess.Popen([PY, "-m", "engine.launcher", str(rd)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=child_env(), cwd=rd)
    out, _ = p.communicate(gate, timeout=30)
    return p.returncode, out


def test_launcher_gate(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    rc, out = _launch(a, b"")  # the worker died before "go": nothing runs
    assert rc == 125 and b"hi" not in out
    assert read_exit(a)["started"] is False
    rc, out = _launch(b, b"go\n")
    assert rc == 0 and b"hi" in out
    rec = read_exit(b)
    assert rec["started"] is True and rec["returncode"] == 0 and rec["ended_at"] >= rec["started_at"]
    assert not [f for f in os.listdir(b) if f.endswith(".tmp")]  # atomic writes leave no temp files


# ----------------------------------------------------------------------------- process


def test_identity_detects_pid_reuse():
    p = subprocess.Popen([PY, "-c", "import time; time.sleep(30)"])
    try:
        ident = process.identity(p.pid)
        assert ident is not None and process.is_alive(p.pid, ident)
        assert process.ProcessIdentity.parse(ident.token()) == ident
        other = process.ProcessIdentity(p.pid, ident.start_ticks - 1, ident.boot)
        assert not process.is_alive(p.pid, other)  # same pid, other process
        assert not process.is_alive(p.pid, process.ProcessIdentity(p.pid, ident.start_ticks, "another-boot"))
        assert not process.is_alive(None, ident)
        import psutil

        created = psutil.Process(p.pid).create_time()  # identities stored before start ticks were kept
        assert process.is_alive(p.pid, created) and not process.is_alive(p.pid, created - 3600)
    finally:
        p.kill()
        p.wait()
    assert not process.is_alive(p.pid, ident)


def test_identity_does_not_read_the_wall_clock(monkeypatch):
    """A stepped clock (NTP, a resumed VM) must not change who a process is."""
    import time as time_module

    before = process.identity(os.getpid())
    monkeypatch.setattr(time_module, "time", lambda: 4_000_000_000.0)
    assert process.identity(os.getpid()) == before


def test_kill_session_reaches_a_child_that_ignores_sigterm(tmp_path):
    script = write_script(tmp_path, "s.py", """
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        c = subprocess.Popen([sys.executable, "-c", "import os, signal, time; os.setpgid(0, 0); "
                              "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(os.getpid(), flush=True); time.sleep(60)"],
                             stdout=sys.stdout)
        time.sleep(60)
    """)
    p = process.spawn([PY, str(script)], cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE)
    child = int(p.stdout.readline())
    t0 = time.monotonic()
    assert process.kill_session(p.pid, grace_s=0.5) == []
    assert time.monotonic() - t0 < 5
    p.wait()
    assert not pid_alive(child) and not pid_alive(p.pid)


# ----------------------------------------------------------------------------- lock


def test_one_worker_per_home_and_a_dead_one_holds_nothing(home):
    assert not worker_alive(home)
    lock = WorkerLock(home)
    assert lock.acquire()
    assert worker_alive(home)
    assert not WorkerLock(home).acquire(wait_s=0.2)
    lock.release()
    assert not worker_alive(home)
    # a process killed with -9 while holding the lock leaves it free
    holder = subprocess.Popen([PY, "-c", "import sys, time; from engine.control import WorkerLock; "
                               f"assert WorkerLock(__import__('pathlib').Path({str(home)!r})).acquire(); "
                               "print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, env=child_env())
    assert holder.stdout.readline().strip() == b"held"
    assert worker_alive(home)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not worker_alive(home)


def test_worker_and_cli_never_import_the_ml_stack():
    code = ("import sys, engine.worker, engine.launcher, engine.control, engine.scheduler, engine.gpus, cli.main, "
            "cli.worker; bad = [m for m in ('torch', 'transformers', 'accelerate', 'peft', 'datasets') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([PY, "-c", code], check=True, env=child_env())


def test_wal_is_checkpointed_when_it_grows(home, store):
    from engine.gpus import EmptyInventory
    from engine.worker import Config, WorkerDaemon

    # the worker's long-lived connection keeps the WAL (the last connection to close folds it back)
    w = WorkerDaemon(Config(home=home, wal_limit_mb=0.0), inventory=EmptyInventory())
    w._db_changed()  # the first read opens the WAL
    for _ in range(20):
        submit(store, ["true"])
    wal = home / "labdeck.db-wal"
    assert wal.stat().st_size > 0
    w._maybe_checkpoint()
    assert wal.stat().st_size == 0


def test_env_record_reads_git_without_taking_the_index_lock(tmp_path, monkeypatch):
    """env.json names the commit and dirtiness of the command's repository; the launcher's git calls
    pass --no-optional-locks, so a job killed mid-call cannot leave a stale index.lock behind."""
    import shutil

    from engine import launcher

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    g = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*g, "init", "-q"], check=True)
    (repo / "f").write_text("1")
    subprocess.run([*g, "add", "f"], check=True)
    subprocess.run([*g, "commit", "-qm", "x"], check=True)
    (repo / "f").write_text("2")
    calls = []
    real_run = subprocess.run

    def spy(argv, *a, **k):  # noqa: ANN001, ANN002, ANN003
        calls.append(argv)
        return real_run(argv, *a, **k)

    monkeypatch.setattr(launcher.subprocess, "run", spy)
    rec = launcher._git_commit(repo)
    assert len(rec["commit"]) == 40 and rec["dirty"] is True
    assert calls and all(c[:2] == ["git", "--no-optional-locks"] for c in calls)
    assert not (repo / ".git" / "index.lock").exists()
