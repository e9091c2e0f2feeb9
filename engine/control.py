"""Starting, stopping and asking about the worker of a home, from the CLI and the TUI.

One worker per home, guarded by `flock` on `HOME/worker.lock`. The kernel drops an flock when its
holder dies however it dies (kill -9, OOM, reboot), so a dead worker never holds the lock and no
stale pid file has to be cleaned up. The lock file's descriptor is close-on-exec and jobs are
spawned with close_fds, so a job that outlives its worker does not keep the lock either.

`worker_alive()` asks the lock, not the heartbeat: it is exact and needs no database. The
heartbeat row (every few seconds) is what `ls` and the app show, and what tells a hung worker
from a dead one.

Stopping is a request in the store (`worker_stop` = "<worker id>:graceful|now"), so it needs no
signal permissions and cannot hit a process that merely reuses the worker's old pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.home import WORKER_LOCK as LOCK_NAME
from db.schema import WORKER_GPUS_KEY as GPUS_KEY  # noqa: F401 - the --gpus of the last `worker start`
from db.schema import WORKER_STOP_KEY as STOP_KEY

LOG_NAME = "worker.log"
OPTIONS_KEY = "worker_options"  # every option of the last explicit start (JSON), reused by automatic starts


def lock_path(home: Path) -> Path:
    return Path(home) / LOCK_NAME


def log_path(home: Path) -> Path:
    return Path(home) / LOG_NAME


class WorkerLock:
    """The home's single-worker lock, held for the life of the worker process."""

    def __init__(self, home: Path) -> None:
        self.path = lock_path(home)
        self.fd: int | None = None

    def acquire(self, wait_s: float = 2.0) -> bool:
        """Take the lock, retrying for `wait_s` (a CLI probing it holds it for microseconds)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        self.fd = fd
        from db.migrations import SCHEMA_VERSION

        os.ftruncate(fd, 0)
        # The schema this worker's labdeck speaks: a newer labdeck will not migrate under it.
        os.write(fd, f"{os.getpid()}\nschema {SCHEMA_VERSION}\n".encode())
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def worker_alive(home: Path) -> bool:
    """True if some process holds the home's worker lock (a living worker)."""
    path = lock_path(home)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock at once
    return False


def lock_owner_pid(home: Path) -> int | None:
    try:
        return int(lock_path(home).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _worker_argv(home: Path, gpus: str | None, options: dict[str, Any]) -> list[str]:
    argv = [sys.executable, "-m", "engine.worker", "--home", str(home)]
    if gpus is not None:
        argv += ["--gpus", gpus]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def start_detached(home: Path, gpus: str | None = None, timeout_s: float = 20.0, **options: Any) -> tuple[bool, str]:
    """Start a worker that survives this terminal; wait until it holds the lock.

    Returns (a worker runs now, message). The worker double-forks itself (`--detach`): the process
    we wait for exits as soon as the worker reports that it holds the lock, so no zombie is left
    behind in a long-lived caller such as the TUI.
    """
    home = Path(home)
    argv = _worker_argv(home, gpus, options) + ["--detach"]
    proc = subprocess.Popen(  # noqa: S603 - argument list
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        close_fds=True, start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return worker_alive(home), "the worker did not report back in time; see " + str(log_path(home))
    text = out.decode(errors="replace").strip()
    return proc.returncode == 0, text


def ensure_worker(home: Path, gpus: str | None = None) -> tuple[bool, str]:
    """Start a detached worker if none is alive. (True, message) if one runs afterwards."""
    if worker_alive(home):
        return True, "worker already running"
    return start_detached(home, gpus)


def request_stop(home: Path, now: bool = False) -> tuple[bool, str]:
    """Ask the living worker to stop: graceful (running jobs finish) or `now` (they are cancelled)."""
    from sqlalchemy import select

    from db.models import Worker
    from db.queue import set_setting
    from db.session import open_store

    if not worker_alive(home):
        return False, "no worker is running"
    store = open_store(home)
    with store.write() as s:
        w = s.execute(select(Worker).where(Worker.stopped_at.is_(None)).order_by(Worker.id.desc())).scalars().first()
        if w is None:
            return False, "the worker has not registered yet; try again in a moment"
        set_setting(s, STOP_KEY, f"{w.id}:{'now' if now else 'graceful'}")
    return True, "stopping"


def wait_until_stopped(home: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker_alive(home):
            return True
        time.sleep(0.1)
    return not worker_alive(home)


@dataclass(frozen=True)
class Status:
    alive: bool  # holds the lock
    online: bool  # heartbeat fresh
    pid: int | None
    host: str
    state: str
    heartbeat_age_s: float | None
    gpus: str
    queue_state: str
    running: list[int]
    queued: int
    snapshot: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(home: Path) -> Status:
    """The worker's state as the lock and the store see it; read-only, no SQLAlchemy import."""
    import json

    from db import reads
    from db.schema import GPU_SNAPSHOT_KEY

    alive = worker_alive(home)
    con = reads.open_readonly(home)
    try:
        ws = reads.worker_state(con)
        counts = reads.count_jobs(con)
        running = [r.id for r in reads.list_jobs(con, statuses=["running"], newest_first=False)]
        raw = reads.get_setting(con, GPU_SNAPSHOT_KEY, "")
    finally:
        con.close()
    now = time.time()
    state = ws.state if alive else ("none" if ws.state == "none" else "stopped")
    return Status(
        alive=alive, online=alive and ws.online, pid=ws.pid if alive else None, host=ws.host, state=state,
        heartbeat_age_s=None if ws.heartbeat_at is None else now - ws.heartbeat_at, gpus=ws.gpus,
        queue_state=ws.queue_state, running=running, queued=counts.get("queued", 0),
        snapshot=json.loads(raw) if raw else {},
    )
