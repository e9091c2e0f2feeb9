"""The worker's own defences, each pinned by the fault it answers: an ignored SIGCHLD, a cancel
racing a natural exit, a full disk at exit.json, a spawn error, the worker's options and
environment, its log."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from worker_helpers import PY, ThreadWorker, child_env, job, submit, wait_status

from db.models import JobStatus
from db.queue import get_setting
from engine import daemon, launcher, logs, outcome
from engine.executors import Executor, Handle, Launch
from engine.rundir import job_env, prepare_run_dir


def _run_launcher(tmp_path: Path, command: list[str], preexec=None) -> dict:  # noqa: ANN001
    rd = prepare_run_dir(tmp_path, 1, {"kind": "command", "command": command})
    env = child_env(LABDECK_NO_GATE="1", LABDECK_RUN_DIR=str(rd), LABDECK_EVENTS=str(rd / "events.jsonl"))
    subprocess.run([PY, "-m", "engine.launcher", str(rd)], env=env, preexec_fn=preexec, check=False,  # noqa: PLW1509
                   capture_output=True, timeout=60)
    rec = launcher.read_exit(rd)
    assert rec is not None
    return rec


def test_an_ignored_sigchld_does_not_turn_a_failure_into_exit_0(tmp_path) -> None:
    rec = _run_launcher(tmp_path, [PY, "-c", "import sys; sys.exit(3)"],
                        preexec=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
    assert rec["returncode"] == 3


def test_exit_record_blocks_are_reserved_and_the_record_is_whole(tmp_path) -> None:
    rec = _run_launcher(tmp_path, [PY, "-c", "pass"])
    text = (tmp_path / "runs" / "1" / "exit.json").read_bytes()
    assert len(text) == launcher.EXIT_RECORD_BYTES and rec["returncode"] == 0 and rec["started"] is True
    assert not list((tmp_path / "runs" / "1").glob(".exit.json.*")), "no reserved file left behind"


def test_a_cancel_racing_a_natural_exit_0_is_a_success() -> None:
    done_first = {"started": True, "returncode": 0, "signal": None, "signals_received": []}
    out = outcome.classify(kind="command", exit_record=done_first, stop_reason="cancel")
    assert out.status is JobStatus.succeeded
    stopped = {**done_first, "signals_received": [15]}  # it exited 0 after the cancel reached it
    assert outcome.classify(kind="command", exit_record=stopped, stop_reason="cancel").status is JobStatus.cancelled
    lost = {"started": True, "returncode": None, "signal": None, "detail": "the job's exit status was lost"}
    assert outcome.classify(kind="command", exit_record=lost).status is JobStatus.failed


def test_oom_counter_is_the_jobs_own_cgroup_or_none(tmp_path, monkeypatch) -> None:
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 1\noom_kill 2\n")
    assert launcher._oom_kills(cg) == 2
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/\n")  # bare metal: the root cgroup counts the whole box
    real_path = launcher.Path
    monkeypatch.setattr(launcher, "Path", lambda p: real_path(proc_cgroup) if p == "/proc/self/cgroup" else real_path(p))
    assert launcher._own_cgroup() is None and launcher._oom_kills() is None


class BrokenExecutor(Executor):
    """Every start fails, as a missing interpreter or a full process table would."""

    name = "broken"

    def start(self, launch: Launch) -> Handle:
        raise OSError(24, "Too many open files")

    def release(self, handle, go) -> None: ...  # noqa: ANN001
    def poll(self, handle) -> bool: return True  # noqa: ANN001, E704
    def cancel(self, handle, grace_s) -> None: ...  # noqa: ANN001
    def stop_step(self, handle) -> bool: return True  # noqa: ANN001, E704
    def adopt(self, job_id, run_dir, external_id): return None  # noqa: ANN001, ANN201, E704
    def exit_record(self, handle): return None  # noqa: ANN001, ANN201, E704


def test_spawn_errors_follow_the_retry_policy(home, store) -> None:
    jid = submit(store, ["true"], retry={"max": 1, "on": ["spawn_error"]})
    w = ThreadWorker(home)
    w.daemon.executor = BrokenExecutor()
    with w:
        wait_status(store, jid, "failed")  # its retry is queued in the same transaction
        wait_status(store, jid + 1, "failed")
    assert (job(store, jid).failure_reason, job(store, jid + 1).attempt) == ("spawn_error", 2)


def test_worker_options_are_remembered_for_automatic_starts(home, store) -> None:
    args = daemon.build_parser().parse_args(["--gpus", "1", "--cpu-slots", "3", "--backfill", "--grace", "4"])
    opts = daemon.resolve_options(args, {})
    assert (opts["gpus"], opts["cpu_slots"], opts["backfill"], opts["grace"], opts["poll"]) == ("1", 3, True, 4.0, 0.2)
    later = daemon.resolve_options(daemon.build_parser().parse_args(["--poll", "0.5"]), opts)
    assert (later["gpus"], later["cpu_slots"], later["backfill"], later["poll"]) == ("1", 3, True, 0.5)
    # and through the real entry point: a start with options, then one without
    out = subprocess.run([PY, "-m", "engine.daemon", "--home", str(home), "--cpu-slots", "3", "--backfill",
                          "--detach"], env=child_env(), capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("ok"), out.stdout + out.stderr
    from engine.control import request_stop, wait_until_stopped

    request_stop(home)
    assert wait_until_stopped(home, 30)
    with store.read() as s:
        assert json.loads(get_setting(s, "worker_options")) == {"backfill": True, "cpu_slots": 3}


def test_visible_gpus_and_cpu_slots_follow_the_worker_environment() -> None:
    assert daemon.allocated_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == frozenset({2, 3})
    assert daemon.allocated_gpus({"CUDA_VISIBLE_DEVICES": ""}) == frozenset()
    assert daemon.allocated_gpus({}) is None and daemon.allocated_gpus({"CUDA_VISIBLE_DEVICES": "GPU-ab12"}) is None
    assert daemon.cpu_slots(None) == len(os.sched_getaffinity(0))


def test_the_workers_own_labdeck_variables_never_reach_a_job(home, store, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABDECK_NO_GATE", "1")
    monkeypatch.setenv("LABDECK_SOMETHING", "x")
    out = tmp_path / "env.json"
    jid = submit(store, [PY, "-c", f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"])
    with ThreadWorker(home):
        wait_status(store, jid, "succeeded")
    env = json.loads(out.read_text())
    assert "LABDECK_NO_GATE" not in env and "LABDECK_SOMETHING" not in env
    assert env["LABDECK_JOB_ID"] == str(jid)
    assert job_env({"CUDA_VISIBLE_DEVICES": "0,1"}, 1, tmp_path, (), 0)["CUDA_VISIBLE_DEVICES"] == ""


def test_repeated_warnings_are_rate_limited_and_the_log_rotates(tmp_path) -> None:
    path = tmp_path / "worker.log"
    logs.setup(path=path, max_bytes=4096)
    log = logging.getLogger("labdeck.test")
    limited = logs.RateLimited(log, window_s=3600)
    written = [limited.warn("job 7", "job 7: skipped 1 event line(s)") for _ in range(1000)]
    assert written.count(True) == 1
    for i in range(400):
        log.info("line %d %s", i, "x" * 40)
    sizes = [p.stat().st_size for p in tmp_path.glob("worker.log*")]
    assert len(sizes) == 1 + logs.BACKUPS and max(sizes) <= 4096 + 200
    logs.setup(sys.stderr)


def test_a_detached_worker_of_either_executor_logs_to_the_rotated_worker_log(tmp_path) -> None:
    """Both `engine.daemon` and the Slurm start go through `setup_logging(home, detached)`."""
    import logging.handlers

    from engine.daemonize import setup_logging

    try:
        setup_logging(tmp_path, detached=True)
        handler, = logging.getLogger("labdeck").handlers
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        assert Path(handler.baseFilename) == tmp_path / "worker.log" and handler.maxBytes == logs.MAX_BYTES
        logging.getLogger("labdeck.worker").info("adopted job 3")
        handler.flush()
        assert "adopted job 3" in (tmp_path / "worker.log").read_text()
    finally:
        logs.setup(sys.stderr)
