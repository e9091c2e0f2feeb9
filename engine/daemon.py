"""`python -m engine.worker`: the worker's command line, daemonising and logging.

Parses the options, takes the home's single-worker lock (`engine.control.WorkerLock`), optionally
double-forks into the background with its output on `HOME/worker.log`, tells whoever started it
one line (`ok: ...`, `busy: ...`, `error: ...`) and runs `engine.worker.WorkerDaemon`. The options
of an explicit start are remembered in the store, so a worker started later on demand (by
`labdeck submit` or the app) runs the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from db.home import ensure_home
from db.queue import get_setting, set_setting
from db.session import Store
from engine import logs
from engine.control import GPUS_KEY, OPTIONS_KEY, WorkerLock, log_path
from engine.rundir import usable_cpus

log = logging.getLogger("labdeck.worker")

def parse_gpus(text: str | None) -> frozenset[int] | None:
    """'0,2' -> {0, 2}; None, '' or 'all' -> None (every GPU)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return frozenset(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--gpus: {text!r} is not a comma separated list of GPU indices") from None


def cpu_slots(option: int | None) -> int | None:
    """CPU-only jobs at once: by default one per CPU this worker may run on (its affinity mask, as
    `taskset` or a cgroup cpuset sets it), so a sweep of CPU jobs cannot swamp the box (GPU jobs
    are bounded by the GPUs); 0 lifts the limit."""
    if option is None:
        return usable_cpus()
    return None if option <= 0 else option


def visible_gpus(env: dict[str, str]) -> frozenset[int] | None:
    """The GPUs a worker started with CUDA_VISIBLE_DEVICES may use: those indices ("" : none);
    None when it is unset or names devices by UUID (then --gpus decides)."""
    value = env.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    try:
        return frozenset(int(x) for x in value.split(",") if x.strip())
    except ValueError:
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
    p = argparse.ArgumentParser(prog="python -m engine.worker", description="labdeck's worker daemon")
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
    return p


def _setup_logging(stream: Any) -> None:
    logs.setup(stream)


def _daemonize(home: Path) -> int:
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


def _tell(fd: int | None, line: str) -> None:
    if fd is None:
        print(line, flush=True)
        return
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = ensure_home(args.home)
    try:
        parse_gpus(args.gpus)
    except ValueError as e:
        print(f"labdeck: {e}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would hide how jobs ended
    ready_fd = _daemonize(home) if args.detach else None
    if args.detach:  # stdout/stderr stay on worker.log for a crash's last words; log lines rotate
        logs.setup(path=log_path(home))
    else:
        logs.setup(sys.stderr)
    lock = WorkerLock(home)
    if not lock.acquire(wait_s=2.0):
        _tell(ready_fd, f"busy: a worker is already running for {home}")
        return 0
    try:
        store = Store(home)
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
        visible = visible_gpus(dict(os.environ))
        if visible is not None:  # started inside CUDA_VISIBLE_DEVICES: only those cards
            gpus = visible if gpus is None else gpus & visible
        from engine.worker import Config, WorkerDaemon

        cfg = Config(home=home, gpus=gpus, poll_s=opts["poll"], heartbeat_s=opts["heartbeat"],
                     kill_grace_s=opts["grace"], cpu_slots=cpu_slots(opts["cpu_slots"]), backfill=bool(opts["backfill"]))
        daemon = WorkerDaemon(cfg, store)
        daemon.install_signals()
        daemon.register()
    except Exception as e:  # noqa: BLE001 - report why, in one line, to whoever started us
        log.error("could not start:\n%s", traceback.format_exc())
        _tell(ready_fd, f"error: {type(e).__name__}: {e}")
        return 1
    _tell(ready_fd, f"ok: worker {daemon.worker_id} running (pid {os.getpid()}), log {log_path(home)}")
    try:
        return daemon.run()
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
