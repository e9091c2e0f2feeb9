"""The local executor: each job is a launcher process on this box, leader of its own session.

`start` spawns `python -m engine.launcher RUN_DIR` with a pipe on stdin (the start gate, see
`engine.launcher`) and its output on the run folder's log; `release` writes `go` or closes the
pipe. A job is known again after a worker restart by its launcher's identity (`engine.process`),
which is what `external_id` holds. Stopping is `engine.process.JobStopper` (SIGTERM to the session,
grace, SIGKILL), advanced without blocking; a pidfd per launcher wakes the worker when it exits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from engine import process
from engine.executors import Executor, Handle, Launch
from engine.launcher import LOG_FILE, read_exit

log = logging.getLogger("labdeck.worker")


@dataclass
class _Local:
    ident: process.ProcessIdentity | float | None  # legacy rows: psutil's create_time()
    popen: subprocess.Popen[bytes] | None = None  # None when adopted
    proc: psutil.Process | None = None  # for adopted launchers
    stopper: process.JobStopper | None = None
    pidfd: int | None = None


def decode_id(external_id: str) -> tuple[int, process.ProcessIdentity | float | None]:
    """(pid, identity) from an external id: `pid:ticks:boot` (`ProcessIdentity.token`), or the
    `pid:create_time` of rows written before; (0, None) for an empty or unreadable one."""
    ident = process.ProcessIdentity.parse(external_id)
    if ident is not None:
        return ident.pid, ident
    pid, _, start = external_id.partition(":")
    try:
        return int(pid), float(start) if start else None
    except ValueError:
        return 0, None


def _launcher_of(pid: int, run_dir: Path) -> bool:
    """True if `pid` is a job launcher for `run_dir`: a session leader whose environment names it.

    The proof used when a stored identity does not match (a row from before start ticks were kept,
    written by a clock that has since been stepped): such a process is adopted, never killed.
    """
    try:
        if os.getsid(pid) != pid:
            return False
        p = psutil.Process(pid)
        return (p.status() != psutil.STATUS_ZOMBIE and p.environ().get("LABDECK_RUN_DIR") == str(run_dir)
                and "engine.launcher" in p.cmdline())
    except (psutil.Error, OSError):
        return False


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s

    # ------------------------------------------------------------------ start

    def start(self, launch: Launch) -> Handle:
        rd = launch.run_dir
        log_fd = os.open(rd / LOG_FILE, os.O_WRONLY | os.O_APPEND)
        try:
            popen = process.spawn([sys.executable, "-m", "engine.launcher", str(rd)], cwd=rd, env=launch.env,
                                  stdout=log_fd, stdin=subprocess.PIPE)
        finally:
            os.close(log_fd)
        ident = process.identity(popen.pid)  # our unreaped child: it cannot be gone or reused yet
        token = ident.token() if ident else f"{popen.pid}:0:"
        return Handle(job_id=launch.job_id, run_dir=rd, external_id=token, pid=popen.pid,
                      state=_Local(ident=ident, popen=popen))

    def release(self, handle: Handle, go: bool) -> None:
        st: _Local = handle.state
        self._open_pidfd(handle)
        popen = st.popen
        if popen is None or popen.stdin is None:
            return
        try:
            if go:
                popen.stdin.write(b"go\n")
                popen.stdin.flush()
            popen.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the launcher already died; its exit is handled like any other

    # ------------------------------------------------------------------ watch

    def poll(self, handle: Handle) -> bool:
        """True once the launcher process is gone (reaped if it is our child)."""
        if handle.ended:
            return True
        st: _Local = handle.state
        if st.popen is not None:
            rc = st.popen.poll()
            if rc is None:
                return False
            handle.returncode = rc
        else:
            try:
                assert st.proc is not None
                if st.proc.is_running() and st.proc.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                pass
        handle.ended = True
        return True

    def wake_fds(self, handles: list[Handle]) -> list[int]:
        # A launcher already known to have exited (its session still being stopped) would keep
        # its pidfd readable and turn the worker's sleep into a busy loop: leave it out.
        return [h.state.pidfd for h in handles if h.state.pidfd is not None and not h.ended]

    def _open_pidfd(self, handle: Handle) -> None:
        """A pidfd for the launcher (Linux >= 5.3), checked against its start time after opening."""
        st: _Local = handle.state
        if not hasattr(os, "pidfd_open") or st.pidfd is not None or not handle.pid:
            return
        try:
            fd = os.pidfd_open(handle.pid)
        except OSError:
            return
        if st.popen is None and not process.is_alive(handle.pid, st.ident):
            os.close(fd)  # the pid was reused between the check and the open
            return
        st.pidfd = fd

    def forget(self, handle: Handle) -> None:
        st: _Local = handle.state
        if st.pidfd is not None:
            os.close(st.pidfd)
            st.pidfd = None
        if st.popen is not None and st.popen.stdin is not None:
            st.popen.stdin.close()

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ stop

    def cancel(self, handle: Handle, grace_s: float) -> None:
        st: _Local = handle.state
        if st.stopper is None and handle.pid:
            st.stopper = process.JobStopper(handle.pid, grace_s, str(handle.run_dir))

    def stopping(self, handle: Handle) -> bool:
        return handle.state.stopper is not None

    def stop_step(self, handle: Handle) -> bool:
        st: _Local = handle.state
        if st.stopper is None:
            return True
        done = st.stopper.step()
        if done:
            handle.survivors = list(st.stopper.survivors)
        return done

    def cleanup(self, handle: Handle) -> list[int]:
        """Stop what a finished job left behind (a background process would hold its GPU); the survivors."""
        if not handle.pid or (handle.state is not None and handle.state.stopper is not None):
            return []
        left = process.leftovers(handle.pid, str(handle.run_dir))
        if not left:
            return []
        log.info("job %d: stopping %d leftover process(es) %s", handle.job_id, len(left), left)
        return process.kill_pids(left, grace_s=min(2.0, self.grace_s))

    # ------------------------------------------------------------------ restart

    def adopt(self, job_id: int, run_dir: Path, external_id: str) -> Handle | None:
        pid, stored = decode_id(external_id)
        if not pid:
            return None
        if not process.is_alive(pid, stored) and not _launcher_of(pid, run_dir):
            return None
        ident = process.identity(pid)
        try:
            proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return None
        if ident is None:
            return None
        h = Handle(job_id=job_id, run_dir=run_dir, external_id=ident.token(), pid=pid, adopted=True,
                   state=_Local(ident=ident, proc=proc),
                   elapsed_s=max(0.0, process.boot_seconds() - ident.started_boot_s))
        self._open_pidfd(h)
        return h

    def legacy_id(self, pid: int | None, pid_start_time: float | None) -> str:
        return f"{pid}:{pid_start_time!r}" if pid else ""

    def gone(self, job_id: int, run_dir: Path, external_id: str) -> Handle:
        pid, stored = decode_id(external_id)
        return Handle(job_id=job_id, run_dir=run_dir, external_id=external_id, pid=pid or None, ended=True,
                      adopted=True, state=_Local(ident=stored))

    def exit_record(self, handle: Handle) -> dict[str, Any] | None:
        return read_exit(handle.run_dir)
