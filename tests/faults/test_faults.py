"""Fault injection: a real worker process and real jobs under each class of fault, and the invariants
of `faults_lib` after each (every job's true final state, no metric row lost or duplicated, no job
run twice, integrity_check ok, the worker heartbeating throughout).

Each scenario runs a well-behaved job beside the faulty one: one job's fault must never cost
another job anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faults_lib import PY, Harness
from sqlalchemy import update

from db.models import Job
from engine import process

N = 40


def _events_scenario(h: Harness, mode: str, tmp_path: Path) -> None:
    good = h.submit("good", N)
    go = tmp_path / "go"
    if mode in ("truncated", "fifo"):
        bad = h.submit(mode, N, str(go))
    else:
        bad = h.submit(mode, N)
    h.start_worker()
    if mode in ("truncated", "fifo"):
        h.wait(lambda: h.count(bad) == (N // 2 if mode == "truncated" else N), what="the lines in the store")
        go.touch()
    h.wait(h.all_final, what="every job final")
    h.assert_heartbeats()
    assert h.count(good) == N
    if mode in ("poison", "oversized", "fifo"):
        assert h.row(bad).events_skipped > 0 and h.row(bad).events_note


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["poison", "oversized", "truncated", "unterminated", "fifo"])
def test_hostile_events_files(tmp_path, mode: str) -> None:
    h = Harness(tmp_path)
    try:
        _events_scenario(h, mode, tmp_path)
    finally:
        h.stop_worker()
    h.check()


@pytest.mark.timeout(120)
def test_sigchld_ignored_by_whoever_starts_the_worker(tmp_path) -> None:
    """An ignored SIGCHLD is inherited by the worker and its launchers; the kernel would then reap
    jobs before anyone learnt how they ended, and a failed job would look like exit 0."""
    h = Harness(tmp_path)
    h.submit("good", N)
    failing = h.submit("fail", 5, want="failed")
    try:
        h.start_worker(preexec=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
        h.wait(h.all_final, what="every job final")
        h.assert_heartbeats()
    finally:
        h.stop_worker()
    h.check()
    assert (h.row(failing).failure_reason, h.row(failing).exit_code) == ("nonzero_exit", 3)


@pytest.mark.timeout(120)
def test_a_reused_pid_is_neither_adopted_nor_killed(tmp_path) -> None:
    """A `running` job whose stored launcher identity names a pid that now belongs to a stranger
    (same pid, other start ticks) becomes interrupted; the stranger lives on."""
    h = Harness(tmp_path)
    lost = h.submit("good", 3, want="interrupted", rows=0)
    good = h.submit("good", N)
    stranger = subprocess.Popen([PY, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        ident = process.identity(stranger.pid)
        assert ident is not None
        fake = process.ProcessIdentity(stranger.pid, ident.start_ticks + 1, ident.boot).token()
        rd = h.home / "runs" / str(lost)
        rd.mkdir(parents=True)
        with h.store.write() as s:
            s.execute(update(Job).where(Job.id == lost).values(status="running", started_at=time.time(),
                                                                run_dir=str(rd), pid=stranger.pid, external_id=fake))
        h.start_worker()
        h.wait(h.all_final, what="every job final")
        h.assert_heartbeats()
        assert stranger.poll() is None, "a stranger was killed"
    finally:
        h.stop_worker()
        stranger.kill()
        stranger.wait()
    h.check()
    assert h.row(lost).failure_reason == "worker_lost" and h.count(good) == N


@pytest.mark.timeout(120)
def test_a_clock_step_kills_no_healthy_job(tmp_path) -> None:
    """The wall clock steps by an hour while the worker is away (NTP, a resumed VM). The identity
    the old worker stored was taken through that clock (psutil's create_time), and the job's
    wall-clock start now looks an hour older than its one-hour time limit. The restarted worker
    must adopt the living job (it is provably ours: a launcher whose environment names its run
    folder), not kill it, and count its time limit on a clock no step moves."""
    h = Harness(tmp_path)
    go = tmp_path / "go"
    job = h.submit("wait", N, str(go), time_limit=3600)
    try:
        h.start_worker()
        h.wait(lambda: h.count(job) == N // 2, what="the job running")
        h.kill9()
        row = h.row(job)
        import psutil

        stepped = psutil.Process(row.pid).create_time() + 3600.0  # as read after the step
        with h.store.write() as s:
            s.execute(update(Job).where(Job.id == job).values(
                external_id="", pid_start_time=stepped, started_at=row.started_at - 2 * 3600.0))
        h.start_worker()
        h.wait(lambda: "adopted" in h.log_tail(), what="the job adopted")
        h.assert_heartbeats()
        assert h.status(job) == "running"
        go.touch()
        h.wait(h.all_final, what="the job final")
    finally:
        h.stop_worker()
    h.check()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],  # noqa: S603, S607
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.timeout(180)
def test_disk_full(tmp_path) -> None:
    """The home's filesystem fills up while a job runs (the job itself fills it, then ends with exit
    0). Its exit record was reserved before it ran, so the job is recorded as succeeded once the
    store can write again; the worker rides out the full disk without dying."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "24m"):
        pytest.skip("mounting a small tmpfs needs root")
    h = None
    try:
        h = Harness(tmp_path, home=mnt / "home")
        marks = tmp_path / "marks"
        marks.mkdir()
        good = h.submit("good", N)
        filler = h.submit("fill", 5, str(marks / "fill"), str(marks / "full"), str(marks / "end"))
        h.start_worker()
        h.wait(lambda: h.status(good) == "succeeded", what="the good job done")
        (marks / "fill").touch()
        h.wait(lambda: (marks / "full").exists(), what="the disk full")
        (marks / "end").touch()  # the job ends with exit 0 on a full disk
        rd = h.home / "runs" / str(filler)
        h.wait(lambda: (rd / "exit.json").exists(), what="the exit record")
        out = h.root / "worker.out"  # off the full disk: the worker's own output
        h.wait(lambda: "database or disk is full" in out.read_text(errors="replace"),
               what="the worker to meet the full disk")
        assert h.worker is not None and h.worker.poll() is None, "the worker died of the full disk"
        (rd / "outputs" / "fill").unlink()
        h.wait(h.all_final, what="every job final")
        h.assert_heartbeats()
        h.stop_worker()
        h.check()
        assert h.row(filler).exit_code == 0
    finally:
        if h is not None:
            h.stop_worker()
            h.store.dispose()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)  # noqa: S603, S607
