"""Starting a worker process: detaching it from the terminal, taking the home's lock, telling
whoever started it how it went.

Shared by the local worker (`engine.daemon`) and the Slurm one (`engine.executors.slurm_start`), so
both start the same way and a fix to the sequence reaches both: a double fork into a new session
with output on `HOME/worker.log`; `serve`, which takes the single-worker lock, builds and registers
the worker, writes one readiness line (`ok: ...`, `busy: ...`, `error: ...`) back through a pipe
and runs it until it is stopped.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.session import Store
from engine import logs
from engine.control import WorkerLock, log_path

if TYPE_CHECKING:
    from engine.worker import WorkerDaemon

log = logging.getLogger("labdeck.worker")


def setup_logging(home: Path, detached: bool, stream: Any = None) -> None:
    """Where a worker's log lines go: a detached worker (local or Slurm) writes the size-rotated
    `HOME/worker.log`, whose stdio also catches a crash's last words; one in a terminal writes to
    `stream` (stderr by default)."""
    if detached:
        logs.setup(path=log_path(home))
    else:
        logs.setup(stream if stream is not None else sys.stderr)


def daemonize(home: Path) -> int:
    """Double fork: the grandchild runs the worker in its own session, stdio on HOME/worker.log.

    Returns the write end of a pipe in the grandchild (for its readiness line); in the original
    process it waits for that line, prints it and exits.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        os.waitpid(pid, 0)
        chunks = []
        while True:
            data = os.read(r, 4096)
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks).decode(errors="replace").strip()
        print(text or f"the worker exited before it was ready; see {log_path(home)}")
        os._exit(0 if text.startswith(("ok", "busy")) else 1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    fd = os.open(log_path(home), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(null)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    return w


def tell(fd: int | None, line: str) -> None:
    if fd is None:
        print(line, flush=True)
        return
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def serve(home: Path, ready_fd: int | None, build: Callable[[Store], WorkerDaemon], where: str = "") -> int:
    """Run one worker for `home`: take the single-worker lock, `build` the worker on a new store,
    register it, tell whoever started us (`ready_fd`, or stdout) and run it until it is stopped.

    Another worker holding the lock is not an error (`busy: ...`, exit 0): starting on demand races
    are harmless. A failure while building says why in one line and in the log (exit 1).
    `where` completes the `ok` line (" on Slurm").
    """
    lock = WorkerLock(home)
    if not lock.acquire(wait_s=2.0):
        tell(ready_fd, f"busy: a worker is already running for {home}")
        return 0
    try:
        daemon = build(Store(home))
        daemon.install_signals()
        daemon.register()
    except Exception as e:  # noqa: BLE001 - report why, in one line, to whoever started us
        log.error("could not start:\n%s", traceback.format_exc())
        tell(ready_fd, f"error: {type(e).__name__}: {e}")
        return 1
    tell(ready_fd, f"ok: worker {daemon.worker_id} running{where} (pid {os.getpid()}), log {log_path(home)}")
    try:
        return daemon.run()
    finally:
        lock.release()
