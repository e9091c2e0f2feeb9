"""`python -m engine.daemon`: the worker's command line, daemonising and logging.

Parses the options, takes the home's single-worker lock (`engine.control.WorkerLock`), optionally
double-forks into the background with its output on `HOME/worker.log`, tells whoever started it
one line (`ok: ...`, `busy: ...`, `error: ...`) and runs `engine.worker.WorkerDaemon` (the sequence
`engine.daemonize.serve` shares with the Slurm worker). The options
of an explicit start are remembered in the store, so a worker started later on demand (by
`labdeck submit` or the app) runs the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.home import ensure_home
from db.queue import get_setting, set_setting
from db.session import Store
from engine.control import GPUS_KEY, OPTIONS_KEY
from engine.daemonize import daemonize as _daemonize
from engine.daemonize import serve as _serve
from engine.daemonize import setup_logging
from engine.rundir import usable_cpus

if TYPE_CHECKING:
    from engine.worker import WorkerDaemon


def parse_gpus(text: str | None) -> frozenset[int] | None:
    """'0,2' -> {0, 2}; None, '' or 'all' -> None (every GPU)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return frozenset(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--gpus: {text!r} is not a comma separated list of GPU indices") from None


def cpu_slots(option: int | None) -> int | None:
    """CPU-only jobs at once: by default one per CPU this process may use (its affinity: a Slurm
    allocation, a cgroup cpuset, `taskset`), so a sweep of CPU jobs cannot swamp the box (GPU jobs
    are bounded by the GPUs); 0 lifts the limit."""
    if option is None:
        return usable_cpus()
    return None if option <= 0 else option


def allocated_gpus(env: Mapping[str, str] | None = None) -> frozenset[int] | None:
    """Pilot mode: inside a Slurm allocation (or with CUDA_VISIBLE_DEVICES set) only those GPUs.

    A worker started by `salloc` or inside an `sbatch` script must not place jobs on cards that
    belong to other people's allocations. SLURM_JOB_GPUS (NVML indices) is preferred; else
    CUDA_VISIBLE_DEVICES when it lists indices. None: no restriction (every GPU found).
    """
    source: Mapping[str, str] = os.environ if env is None else env
    for var in ("SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES"):
        text = source.get(var)
        if text is None:
            continue
        items = [x.strip() for x in text.split(",") if x.strip()]
        if all(x.isdigit() for x in items):
            return frozenset(int(x) for x in items)
    return None


# Options remembered by an explicit start and reused by workers started on demand later.
REMEMBERED = ("gpus", "poll", "heartbeat", "grace", "cpu_slots", "backfill")
DEFAULTS: dict[str, Any] = {"gpus": None, "poll": 0.2, "heartbeat": 3.0, "grace": 10.0, "cpu_slots": None,
                            "backfill": False}


def resolve_options(args: argparse.Namespace, remembered: dict[str, Any]) -> dict[str, Any]:
    """Each option: as given now, else as remembered from the last explicit start, else the default."""
    out = {}
    for key in REMEMBERED:
        given = getattr(args, key)
        out[key] = given if given is not None else remembered.get(key, DEFAULTS[key])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.daemon", description="labdeck's worker daemon")
    p.add_argument("--home", default=None)
    p.add_argument("--gpus", default=None, help="GPU indices this worker may use, e.g. 0,2 ('all' resets)")
    p.add_argument("--detach", action="store_true", help="double-fork into the background, log to HOME/worker.log")
    p.add_argument("--poll", type=float, default=None, help="seconds between rounds (default 0.2)")
    p.add_argument("--heartbeat", type=float, default=None, help="seconds between heartbeats (default 3)")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds between SIGTERM and SIGKILL when stopping a job (default 10)")
    p.add_argument("--cpu-slots", type=int, default=None,
                   help="at most this many CPU-only jobs at once (default: the number of CPUs; 0: no limit)")
    p.add_argument("--backfill", action=argparse.BooleanOptionalAction, default=None,
                   help="let GPU jobs overtake a waiting bigger one")
    p.add_argument("--executor", choices=("local", "slurm"), default=None,
                   help="where jobs run: this box (default) or a Slurm cluster; remembered")
    g = p.add_argument_group("Slurm (--executor slurm; remembered)")
    g.add_argument("--partition", default=None, help="default partition (a spec's slurm: block overrides it)")
    g.add_argument("--account", default=None, help="default account")
    g.add_argument("--qos", default=None, help="default quality of service")
    g.add_argument("--sbatch-arg", action="append", default=None, help="one more sbatch option (repeatable)")
    g.add_argument("--runs-dir", default=None, help="run folders on storage every node sees")
    g.add_argument("--slurm-poll", type=float, default=None, help="seconds between squeue calls (default 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = ensure_home(args.home)
    from engine.executors import slurm_start

    if slurm_start.chosen(home, args.executor):
        return slurm_start.run(args, home)
    try:
        parse_gpus(args.gpus)
    except ValueError as e:
        print(f"labdeck: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would hide how jobs ended
    ready_fd = _daemonize(home) if args.detach else None
    setup_logging(home, args.detach)
    return _serve(home, ready_fd, lambda store: _local_worker(args, home, store))


def _local_worker(args: argparse.Namespace, home: Path, store: Store) -> WorkerDaemon:
    """The local worker with this start's options (remembered for workers started on demand later)."""
    with store.write() as s:
        try:
            remembered = json.loads(get_setting(s, OPTIONS_KEY, "") or "{}")
        except ValueError:
            remembered = {}
        if not remembered and get_setting(s, GPUS_KEY, ""):  # a home from before all options were kept
            remembered = {"gpus": get_setting(s, GPUS_KEY, "")}
        opts = resolve_options(args, remembered)
        given = {k: getattr(args, k) for k in REMEMBERED if getattr(args, k) is not None}
        if given:  # remember for workers started on demand later
            set_setting(s, OPTIONS_KEY, json.dumps({**remembered, **given}, sort_keys=True))
            if "gpus" in given:
                set_setting(s, GPUS_KEY, "" if parse_gpus(given["gpus"]) is None else given["gpus"])
    gpus = parse_gpus(opts["gpus"])
    allocated = allocated_gpus()  # pilot mode, or CUDA_VISIBLE_DEVICES: only those cards
    if allocated is not None:
        gpus = allocated if gpus is None else gpus & allocated
    from engine.worker import Config, WorkerDaemon

    cfg = Config(home=home, gpus=gpus, poll_s=opts["poll"], heartbeat_s=opts["heartbeat"],
                 kill_grace_s=opts["grace"], cpu_slots=cpu_slots(opts["cpu_slots"]), backfill=bool(opts["backfill"]))
    return WorkerDaemon(cfg, store)

if __name__ == "__main__":
    sys.exit(main())
