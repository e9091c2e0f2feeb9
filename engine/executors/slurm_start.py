"""Starting a worker whose executor is Slurm: `python -m engine.daemon --executor slurm --home HOME
[--partition P] [--account A] [--qos Q] [--sbatch-arg ARG]... [--runs-dir DIR]`.

Usually reached as `labdeck worker start --executor slurm ...`. Before anything else it refuses, in
one line and with exit status 2, to run where it cannot work: without `sbatch` on PATH, or with the
database on a network filesystem (statfs says NFS, Lustre, GPFS, CIFS, CephFS or BeeGFS), where
SQLite's locking and WAL are unsafe. The Slurm options are remembered in the store, so a worker
started later on demand (`labdeck submit`, the app) runs the same way.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import sys
from pathlib import Path
from typing import Any

from db.home import set_runs_dir
from db.queue import get_setting, set_setting
from db.session import Store
from engine.daemonize import daemonize, serve, setup_logging
from engine.executors import slurm as sl
from engine.executors.slurm_worker import SlurmConfig, SlurmWorker
from engine.jobstate import Config

EXECUTOR_KEY = "worker_executor"  # JSON of the last `worker start --executor slurm ...` options

# statfs f_type of filesystems where SQLite's locking and WAL are unsafe.
NETWORK_FS = {0x6969: "NFS", 0x0BD00BD0: "Lustre", 0x47504653: "GPFS", 0xFF534D42: "CIFS", 0xFE534D42: "SMB2",
              0x00C36400: "CephFS", 0x19830326: "BeeGFS"}


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 128)]


def fs_type(path: Path) -> int | None:
    """statfs(2)'s f_type for `path` (None where it cannot be asked)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = _Statfs()
        if libc.statfs(str(path).encode(), ctypes.byref(buf)) != 0:
            return None
        return int(buf.f_type) & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def network_fs(path: Path, f_type: int | None = None) -> str | None:
    """The name of the network filesystem holding `path`, or None if it is local."""
    kind = fs_type(path) if f_type is None else f_type
    return NETWORK_FS.get(kind) if kind is not None else None


def refusal(home: Path) -> str | None:
    """Why a Slurm worker must not start here (one line), or None."""
    why = sl.SlurmClient.available()
    if why:
        return why
    fs = network_fs(home)
    if fs:
        return (f"the database {home / 'labdeck.db'} is on {fs}: SQLite's locking is unsafe there; keep the home on "
                "the login node's local disk and put run folders on shared storage with --runs-dir")
    return None


# ---------------------------------------------------------------------- entry point


def chosen(home: Path, executor: str | None) -> bool:
    """Whether this start runs on Slurm: `--executor slurm`, or a remembered one when none is given.
    `--executor local` forgets a remembered Slurm executor."""
    if executor == "slurm":
        return True
    if not (home / "labdeck.db").exists():
        return False
    store = Store(home)
    try:
        if executor == "local":
            with store.write() as s:
                set_setting(s, EXECUTOR_KEY, "")
            return False
        with store.read() as s:
            remembered = json.loads(get_setting(s, EXECUTOR_KEY, "") or "{}")
    finally:
        store.dispose()
    return remembered.get("executor") == "slurm"


def resolve_options(store: Store, args: argparse.Namespace) -> dict[str, Any]:
    """This start's Slurm options, remembered for automatic restarts (given ones replace the stored)."""
    given = {k: getattr(args, k) for k in ("partition", "account", "qos", "sbatch_arg", "runs_dir", "slurm_poll")
             if getattr(args, k, None) is not None}
    if given.get("runs_dir"):
        given["runs_dir"] = str(Path(given["runs_dir"]).expanduser().absolute())
    with store.write() as s:
        stored = json.loads(get_setting(s, EXECUTOR_KEY, "") or "{}")
        opts = {**stored.get("slurm", {}), **given}
        set_setting(s, EXECUTOR_KEY, json.dumps({"executor": "slurm", "slurm": opts}))
    if given.get("runs_dir"):
        set_runs_dir(store.home, given["runs_dir"])
    return opts


def slurm_config(opts: dict[str, Any]) -> SlurmConfig:
    return SlurmConfig(
        defaults=sl.Defaults(partition=opts.get("partition"), account=opts.get("account"), qos=opts.get("qos"),
                             sbatch_args=tuple(opts.get("sbatch_arg") or ())),
        slurm_poll_s=float(opts.get("slurm_poll") or 2.0),
    )


def run(args: argparse.Namespace, home: Path) -> int:
    """Start the Slurm worker with parsed `engine.daemon` arguments (refusing first, in one line)."""
    why = refusal(home)
    if why:
        print(f"labdeck: {why}", file=sys.stderr)
        return 2
    ready_fd = daemonize(home) if args.detach else None
    setup_logging(home, args.detach)

    def build(store: Store) -> SlurmWorker:
        opts = resolve_options(store, args)
        given = {"poll_s": args.poll, "heartbeat_s": args.heartbeat, "kill_grace_s": args.grace}
        cfg = Config(home=home, **{k: v for k, v in given.items() if v is not None})
        return SlurmWorker(cfg, slurm_config(opts), store)

    return serve(home, ready_fd, build, " on Slurm")
