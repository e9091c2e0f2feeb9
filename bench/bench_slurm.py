"""Slurm executor benchmarks on a real single-node Slurm started here: printed, not asserted.

    PYTHONPATH=. python bench/bench_slurm.py [--jobs 200] [--latency-runs 5]

1. queued -> RUNNING (goal: labdeck adds <= 0.5 s to Slurm's own start latency): the same tiny
   command (it writes its first timestamp) submitted (a) by `sbatch --wrap` directly, timed from
   sbatch's start, and (b) through labdeck's Slurm worker, timed from the enqueue commit; and (c)
   through the local worker for comparison. Medians and the added latency (b - a).
2. A sweep of N jobs (default 200) that mostly wait in Slurm (the node has 8 CPUs, each job sleeps):
   time until every job has its Slurm id, scheduler calls (squeue/sacct/scontrol) per minute while
   tracking (goal: <= 1 per poll interval whatever N), and the worker's CPU while tracking.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "slurm"))

from slurm_cluster import LocalSlurm  # noqa: E402

from db.models import Job  # noqa: E402
from db.queue import JobDraft, enqueue  # noqa: E402
from db.session import Store  # noqa: E402
from engine.executors.slurm_worker import SlurmConfig, SlurmWorker  # noqa: E402
from engine.worker import Config, WorkerDaemon  # noqa: E402

PY = sys.executable
STAMP = "import sys, time; open(sys.argv[1], 'w').write(repr(time.time()))"


def submit(store: Store, command: list[str], name: str = "bench") -> tuple[int, float]:
    spec = {"kind": "command", "command": command, "experiment": "bench", "name": name, "env": {}, "cwd": None,
            "multi_gpu": "none"}
    with store.write() as s:
        jid = enqueue(s, [JobDraft(experiment="bench", name=name, kind="command", spec=spec)])[0]
    return jid, time.time()


def wait_file(path: Path, timeout: float = 120.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
            if text:
                return float(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise TimeoutError(path)


class Threaded:
    def __init__(self, daemon: WorkerDaemon) -> None:
        self.daemon = daemon
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: daemon.run(until=self.stop.is_set), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def latency(cluster: LocalSlurm, tmp: Path, runs: int) -> None:
    direct = []
    for i in range(runs):
        f = tmp / f"direct-{i}"
        t0 = time.time()
        cluster.run("sbatch", "--parsable", "-o", "/dev/null", "--wrap", f"{PY} -c \"{STAMP}\" {f}")
        direct.append(wait_file(f) - t0)
    home = tmp / "slurm-home"
    w = Threaded(SlurmWorker(Config(home=home, poll_s=0.2), SlurmConfig(slurm_poll_s=2.0)))
    via = []
    try:
        for i in range(runs):
            f = tmp / f"via-{i}"
            _, t0 = submit(w.daemon.store, [PY, "-c", STAMP, str(f)])
            via.append(wait_file(f) - t0)
    finally:
        w.close()
    home = tmp / "local-home"
    w = Threaded(WorkerDaemon(Config(home=home, poll_s=0.2)))
    local = []
    try:
        for i in range(runs):
            f = tmp / f"local-{i}"
            _, t0 = submit(w.daemon.store, [PY, "-c", STAMP, str(f)])
            local.append(wait_file(f) - t0)
    finally:
        w.close()
    d, v, lo = statistics.median(direct), statistics.median(via), statistics.median(local)
    print(f"queued -> command running, median of {runs}:")
    print(f"  sbatch directly        {d:6.2f} s   (Slurm's own start latency, the baseline)")
    print(f"  labdeck on Slurm       {v:6.2f} s   added {v - d:+.2f} s (goal <= 0.5 s), ratio {v / d:.2f}x")
    print(f"  labdeck local worker   {lo:6.2f} s   ratio to Slurm's own {lo / d:.2f}x")


def sweep(cluster: LocalSlurm, tmp: Path, n: int, track_s: float) -> None:
    home = tmp / "sweep-home"
    store = Store(home)
    poll_s = 2.0
    daemon = SlurmWorker(Config(home=home, poll_s=0.2), SlurmConfig(slurm_poll_s=poll_s))
    me = psutil.Process()
    ids = []
    for i in range(n):
        ids.append(submit(store, ["sleep", "30"], name=f"p{i}")[0])
    t0 = time.monotonic()
    w = Threaded(daemon)
    try:
        while True:
            with store.read() as s:
                done = s.execute(select(func.count()).where(Job.slurm_job_id.is_not(None))).scalar_one()
            if done >= n:
                break
            time.sleep(0.2)
        submit_s = time.monotonic() - t0
        calls0 = dict(daemon.client.calls)
        cpu0, children0 = me.cpu_times(), None
        t1 = time.monotonic()
        time.sleep(track_s)
        cpu1 = me.cpu_times()
        elapsed = time.monotonic() - t1
        calls = {k: daemon.client.calls.get(k, 0) - calls0.get(k, 0) for k in daemon.client.calls}
    finally:
        w.close()
        cluster.run("scancel", "--user", str(os.getuid()), check=False)
    del children0
    sched = sum(v for k, v in calls.items() if k in ("squeue", "sacct", "scontrol"))
    per_min = sched / elapsed * 60
    cpu = (cpu1.user + cpu1.system + cpu1.children_user + cpu1.children_system
           - cpu0.user - cpu0.system - cpu0.children_user - cpu0.children_system)
    print(f"sweep of {n} jobs (most pending in Slurm):")
    print(f"  submission             {submit_s:6.1f} s for {n} jobs ({submit_s / n * 1000:.0f} ms per sbatch)")
    print(f"  tracking over {elapsed:.0f} s   {sched} scheduler calls = {per_min:.1f}/min; poll interval {poll_s:.0f} s "
          f"allows {60 / poll_s:.0f}/min -> {per_min / (60 / poll_s):.2f} calls per interval (goal <= 1)")
    print(f"  calls by command       {calls}")
    print(f"  worker CPU (+ its squeue children) {cpu / elapsed * 100:.1f}% of a core")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--latency-runs", type=int, default=5)
    ap.add_argument("--track", type=float, default=30.0, help="seconds of tracking measured in the sweep")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="labdeck-bench-slurm-"))
    cluster = LocalSlurm(root / "cluster")
    cluster.start()
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        latency(cluster, root, args.latency_runs)
        sweep(cluster, root, args.jobs, args.track)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
