"""Detaching the worker from the terminal that started it, and telling that terminal how it went.

Shared by the local worker (`engine.daemon`) and the Slurm one (`engine.executors.slurm_start`):
a double fork into a new session with output on `HOME/worker.log`, and one readiness line
(`ok: ...`, `busy: ...`, `error: ...`) written back through a pipe.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from engine import logs
from engine.control import log_path


def setup_logging(stream: Any) -> None:
    logs.setup(stream)


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
