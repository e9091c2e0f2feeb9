"""Where labdeck keeps its state: one folder per home, private to its owner.

A home holds `labdeck.db` (the SQLite store) and `runs/<job id>/` (each job's run folder). On a
cluster the run folders must live where every node sees them while the database stays on the login
node's local disk (SQLite is unsafe on NFS): the home setting `runs_dir` (the file `HOME/runs_dir`,
one absolute path, written by `labdeck worker start --runs-dir DIR`) moves them there.
On a shared GPU box other users must not read prompts, outputs or tokens in logs, so the folder
is created 0700 and the database 0600 (SQLite creates `-wal` and `-shm` beside it with the same
mode as the database).
"""

from __future__ import annotations

import hashlib
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


RUNS_DIR_FILE = "runs_dir"


def runs_root(home: Path) -> Path:
    """Where run folders live: the home's `runs_dir` setting, else `HOME/runs`."""
    try:
        text = (Path(home) / RUNS_DIR_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return Path(text) if text else Path(home) / "runs"


def set_runs_dir(home: Path, folder: Path | str | None) -> Path:
    """Remember `folder/labdeck-<home tag>` (absolute, created 0700) as the home's runs_dir; None goes
    back to HOME/runs. The tag (a hash of the home's path) keeps two homes that share one scratch
    folder from ever sharing a run folder (both number their jobs from 1)."""
    setting = Path(home) / RUNS_DIR_FILE
    if folder is None:
        setting.unlink(missing_ok=True)
        return runs_root(home)
    tag = hashlib.sha1(str(Path(home).absolute()).encode()).hexdigest()[:6]
    path = Path(folder).expanduser().absolute() / f"labdeck-{tag}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = setting.with_name(f".{RUNS_DIR_FILE}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (str(path) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, setting)
    return path


def run_dir(home: Path, job_id: int) -> Path:
    return runs_root(home) / str(job_id)
