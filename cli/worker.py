"""`labdeck worker start|stop|status`, and starting a worker when none is alive.

The worker itself lives in `engine.worker`, the start/stop/status mechanics in `engine.control`;
this module only parses arguments and reports. Nothing here imports the store or the worker at
module level, so `labdeck --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cli.common import AddCommand


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"), help="what to do")
    parser.add_argument("--foreground", action="store_true", help="start: run in this terminal (for systemd and debugging)")
    parser.add_argument("--gpus", default=None, help="start: only these GPU indices, e.g. 0,2 ('all' for every GPU); remembered")
    parser.add_argument("--grace", type=float, default=None, help="start: seconds between SIGTERM and SIGKILL when a job is stopped (default 10)")
    parser.add_argument("--cpu-slots", type=int, default=None, help="start: at most this many CPU-only jobs at once (default: one per CPU; 0: no limit)")
    parser.add_argument("--now", action="store_true", help="stop: cancel running jobs instead of letting them finish")
    parser.add_argument("--wait", action="store_true", help="stop: return only when the worker has exited")
    parser.add_argument("--json", action="store_true", help="status: print JSON")


def ensure_worker(home: Path, quiet: bool = False) -> bool:
    """Start a detached worker for `home` if none is alive. True if one runs afterwards.

    Called by `labdeck submit` and by the app (both quiet: the app draws on the terminal, a stray
    line on stderr would tear its screen); costs one flock probe when a worker runs. Waits up to
    ~20 s for a new worker to report back, so the app calls it from a thread.
    """
    from engine.control import ensure_worker as _ensure

    ok, message = _ensure(Path(home))
    if not quiet:
        print(f"labdeck: {message}", file=sys.stderr)
    return ok


def _home(args: argparse.Namespace) -> Path:
    from db.home import ensure_home

    return ensure_home(args.home)


def _home_with_store(args: argparse.Namespace) -> Path:
    """The home, its store opened (and migrated) once."""
    from db.session import open_store

    store = open_store(args.home)
    store.dispose()
    return store.home


def _start(args: argparse.Namespace) -> int:
    from engine.control import start_detached, worker_alive

    home = _home(args)
    if args.foreground:
        from engine.worker import main as worker_main

        argv = ["--home", str(home)]
        if args.gpus is not None:
            argv += ["--gpus", args.gpus]
        if args.grace is not None:
            argv += ["--grace", str(args.grace)]
        if args.cpu_slots is not None:
            argv += ["--cpu-slots", str(args.cpu_slots)]
        return worker_main(argv)
    if worker_alive(home):
        print("a worker is already running for this home (labdeck worker stop, then start, to change its options)")
        return 0
    ok, message = start_detached(home, args.gpus, grace=args.grace, cpu_slots=args.cpu_slots)
    print(message)
    return 0 if ok else 1


def _stop(args: argparse.Namespace) -> int:
    from cli.common import home_path
    from engine.control import request_stop, status, wait_until_stopped

    home = home_path(args)  # a stop creates nothing: no home, no worker to stop
    ok, message = request_stop(home, now=args.now)
    if not ok:
        print(message)
        return 0
    st = status(home)
    if args.now:
        print(f"worker stopping: cancelling {len(st.running)} running job(s)")
    else:
        print(f"worker stopping: {len(st.running)} running job(s) finish first, nothing new starts")
    if args.wait or args.now:
        timeout = None if args.wait else 60.0
        t0 = time.monotonic()
        while not wait_until_stopped(home, 1.0):
            if timeout is not None and time.monotonic() - t0 > timeout:
                print("the worker has not exited yet; see labdeck worker status")
                return 1
        print("worker stopped")
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _status(args: argparse.Namespace) -> int:
    from cli.common import UserError, home_path
    from db import reads
    from engine.control import status

    try:
        st = status(home_path(args))
    except reads.NoHome as e:
        raise UserError(str(e)) from None
    except reads.StoreNeedsMigration:
        st = status(_home_with_store(args))
    if args.json:
        print(json.dumps(st.as_dict(), indent=2))
        return 0
    if st.alive:
        health = "online" if st.online else f"NOT RESPONDING (last heartbeat {_age(st.heartbeat_age_s)})"
        print(f"worker {st.state}, {health}: pid {st.pid} on {st.host}, heartbeat {_age(st.heartbeat_age_s)}")
    else:
        print("no worker running (labdeck worker start; labdeck submit starts one too)")
    print(f"queue {st.queue_state}: {len(st.running)} running, {st.queued} queued; "
          f"GPUs {st.gpus or 'all'}")
    if not st.alive:
        return 0  # the GPU snapshot and waiting reasons are the last worker's, not news
    for g in st.snapshot.get("gpus", []):
        ours = [p for p in g.get("processes", []) if p.get("job_id") is not None]
        others = [p for p in g.get("processes", []) if p.get("job_id") is None]
        mark = "" if g.get("allowed", True) else " (not used by this worker)"
        jobs = ",".join(str(p["job_id"]) for p in ours)
        print(f"  gpu {g['index']} {g.get('name', '')}: {g.get('mem_used_mb', 0):.0f}/{g.get('mem_total_mb', 0):.0f} MB, "
              f"util {g.get('util_pct')}%, jobs [{jobs}], other processes {len(others)}{mark}")
    waiting = st.snapshot.get("waiting", {})
    for jid, why in list(waiting.items())[:10]:
        print(f"  job {jid} waits: {why}")
    return 0


def run_worker_command(args: argparse.Namespace) -> int:
    return {"start": _start, "stop": _stop, "status": _status}[args.action](args)


def register(add: AddCommand) -> None:
    add_worker_arguments(add("worker", run_worker_command, "Start, stop or inspect the worker daemon that runs jobs"))
