"""Where labdeck keeps its state: one folder per home, private to its owner.

A home holds `labdeck.db` (the SQLite store) and `runs/<job id>/` (each job's run folder).
On a shared GPU box other users must not read prompts, outputs or tokens in logs, so the folder
is created 0700 and the database 0600 (SQLite creates `-wal` and `-shm` beside it with the same
mode as the database).
"""

from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "labdeck.db"


def default_home() -> Path:
    """`LABDECK_HOME`, else the per-user data folder (`$XDG_DATA_HOME/labdeck`)."""
    env = os.environ.get("LABDECK_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "labdeck"


WORKER_LOCK = "worker.lock"


class HomeError(RuntimeError):
    """The home cannot be used safely (someone else's folder, a link where a folder must be)."""


def _check_owned(path: Path, what: str) -> None:
    uid = os.getuid()
    link = os.lstat(path)
    real = os.stat(path)
    if link.st_uid != uid or real.st_uid != uid:
        owner = link.st_uid if link.st_uid != uid else real.st_uid
        raise HomeError(f"{path}: the {what} belongs to user id {owner}, not to you; refusing to use it")


def ensure_home(home: Path | str | None = None) -> Path:
    """Create the home (0700) and its `runs/` folder if missing; return its absolute path.

    On a shared box a home another user prepared (a folder they own, or a link they placed)
    would let them read prompts, outputs and tokens, or swap files under the worker: the home
    (and what it links to) must be the user's own, and `runs/` and `labdeck.db` must not be links.
    """
    path = Path(home).expanduser() if home else default_home()
    path = path.absolute()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_owned(path, "home folder")
    os.chmod(path, 0o700)  # mkdir's mode is masked by umask, and an existing folder keeps its own
    for name in ("runs", DB_NAME):
        if (path / name).is_symlink():
            raise HomeError(f"{path / name}: is a symbolic link; a home's {name} must be a real "
                            f"{'folder' if name == 'runs' else 'file'}")
    (path / "runs").mkdir(mode=0o700, exist_ok=True)
    return path


def worker_lock_schema(home: Path) -> tuple[bool, int | None]:
    """(a worker holds the home's lock, the schema version it wrote there or None if it wrote none).

    The lock is an flock on `HOME/worker.lock` (see `engine.control`); the store asks it before
    migrating, so a newer labdeck never changes the schema under a running older worker.
    """
    import fcntl

    lock = path_of_lock(home)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 200, 0).decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("schema "):
                    try:
                        return True, int(line.split()[1])
                    except (IndexError, ValueError):
                        break
            return True, None
        return False, None
    finally:
        os.close(fd)


def path_of_lock(home: Path) -> Path:
    return Path(home) / WORKER_LOCK


def db_path(home: Path) -> Path:
    return home / DB_NAME


def run_dir(home: Path, job_id: int) -> Path:
    return home / "runs" / str(job_id)
