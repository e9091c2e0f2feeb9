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


def ensure_home(home: Path | str | None = None) -> Path:
    """Create the home (0700) and its `runs/` folder if missing; return its absolute path."""
    path = Path(home).expanduser() if home else default_home()
    path = path.absolute()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # mkdir's mode is masked by umask, and an existing folder keeps its own
    (path / "runs").mkdir(mode=0o700, exist_ok=True)
    return path


def db_path(home: Path) -> Path:
    return home / DB_NAME


def run_dir(home: Path, job_id: int) -> Path:
    return home / "runs" / str(job_id)
