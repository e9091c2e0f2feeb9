"""Worker benchmarks: printed, not asserted. Ratios are taken against a baseline in the same run.

    PYTHONPATH=. python bench/bench_worker.py [--quick]

1. queued -> running latency (goal: p50 < 0.5 s): a worker with its production settings (poll
   0.2 s), jobs submitted one at a time at random moments; `started_at - queued_at` is when the
   claim committed, and the job's own first timestamp shows when its process really ran.
2. metric ingestion (goal: >= 100k rows/s and >= 1/3 of raw): a raw SQLAlchemy Core
   `insert(Metric)` executemany of N prepared rows, against (a) `engine.ingest` reading the same N
   rows from an events file, parsing and writing them, and (b) a live worker ingesting a job's
   N-line events file, timed from the moment the job finished writing it to the last row in the store.
3. worker idle CPU (goal: < 1% of a core): CPU seconds of an idle worker over a window, and of a
   worker watching one silent running job.
4. wall-time overhead of a `command` job against running the same command directly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from db.models import Job, Metric  # noqa: E402
from db.queue import JobDraft, enqueue  # noqa: E402
from db.session import Store  # noqa: E402
from engine import ingest  # noqa: E402

PY = sys.executable


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT)
    e.pop("LABDECK_FAKE_GPUS", None)
    return e


def submit(store: Store, command: list[str], name: str = "bench") -> int:
    spec = {"kind": "command", "command": command, "experiment": "bench", "name": name, "env": {}, "cwd": None,
            "multi_gpu": "none"}
    with store.write() as s:
        return enqueue(s, [JobDraft(experiment="bench", name=name, kind="command", spec=spec)])[0]


def status(store: Store, jid: int) -> str:
    with store.read() as s:
        st = s.execute(select(Job.status).where(Job.id == jid)).scalar_one()
    return getattr(st, "value", st)


def times(store: Store, jid: int) -> tuple[float, float | None, float | None]:
    with store.read() as s:
        return tuple(s.execute(select(Job.queued_at, Job.started_at, Job.finished_at).where(Job.id == jid)).one())


def wait(pred, timeout: float = 60.0, interval: float = 0.005):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError


class Worker:
    def __init__(self, home: Path, *args: str) -> None:
        self.log = open(home / "bench-worker.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([PY, "-m", "engine.daemon", "--home", str(home), *args], env=env(),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        from engine.control import worker_alive

        wait(lambda: worker_alive(home), 30, 0.05)
        time.sleep(1.0)  # let it finish start-up and reconcile

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ----------------------------------------------------------------------------- 1. latency


def bench_latency(root: Path, n: int) -> dict[str, float]:
    import random

    home = root / "latency"
    store = Store(home)
    script = root / "first.py"
    script.write_text("import sys, time; open(sys.argv[1], 'w').write(repr(time.time()))\n")
    w = Worker(home)
    claim, process = [], []
    try:
        for i in range(n):
            time.sleep(random.uniform(0.05, 0.4))  # land anywhere in the poll cycle
            mark = root / f"first{i}"
            jid = submit(store, [PY, str(script), str(mark)])
            wait(lambda jid=jid: status(store, jid) in ("succeeded", "failed"), 30)
            q, s, _ = times(store, jid)
            claim.append(s - q)
            process.append(float(mark.read_text()) - q)
    finally:
        w.stop()
    return {"claim_p50": statistics.median(claim), "claim_p90": pct(claim, 0.9), "claim_max": max(claim),
            "proc_p50": statistics.median(process), "proc_p90": pct(process, 0.9)}


# ----------------------------------------------------------------------------- 2. ingestion


def write_events(path: Path, n: int) -> None:
    t = time.time()
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"type": "metric", "t": t, "name": "loss", "value": 1.0 / (i + 1), "step": i}) + "\n")


def bench_ingest(root: Path, n: int) -> dict[str, float]:
    home = root / "ingest"
    store = Store(home)
    jid = submit(store, ["true"])
    events = root / "events.jsonl"
    write_events(events, n)

    rows = [{"job_id": jid, "name": "loss", "step": i, "value": 1.0 / (i + 1), "time": 1.0} for i in range(n)]
    raw = []
    for _ in range(3):
        t0 = time.perf_counter()
        with store.write() as s:
            s.connection().execute(Metric.__table__.insert(), rows)
        raw.append(n / (time.perf_counter() - t0))

    path_rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        feed = ingest.Feed(jid, events, 0, root)
        while True:
            batch = ingest.collect([feed])
            if batch.empty:
                break
            with store.write() as s:
                ingest.write(s, batch)
            feed.offset = batch.offsets[jid]
        path_rates.append(n / (time.perf_counter() - t0))

    # (b) through a live worker: the job copies a prepared N-line file into its events file at once
    copier = root / "copy.py"
    copier.write_text(
        "import os, shutil, sys, time\n"
        "with open(sys.argv[1], 'rb') as src, open(os.environ['LABDECK_EVENTS'], 'ab') as dst:\n"
        "    shutil.copyfileobj(src, dst, 1 << 20)\n"
        "open(sys.argv[2], 'w').write(repr(time.time()))\n"
    )
    w = Worker(home)
    live = []
    try:
        for k in range(2):
            mark = root / f"copied{k}"
            job = submit(store, [PY, str(copier), str(events), str(mark)])

            def offset(job: int = job) -> int:
                # the committed offset (a primary-key lookup): polling count(*) over a growing
                # metric table would itself eat the CPU the worker needs on a small box
                with store.read() as s:
                    return s.execute(select(Job.events_offset).where(Job.id == job)).scalar_one()

            size = events.stat().st_size
            wait(lambda size=size: offset() >= size, 120, 0.02)
            t_end = time.time()
            live.append(n / (t_end - float(mark.read_text())))
            wait(lambda job=job: status(store, job) == "succeeded", 30)
            with store.read() as s:
                assert s.execute(select(func.count()).where(Metric.job_id == job)).scalar_one() == n
    finally:
        w.stop()
    r, p, lv = statistics.median(raw), statistics.median(path_rates), statistics.median(live)
    return {"rows": n, "raw_core_rows_s": r, "ingest_path_rows_s": p, "live_worker_rows_s": lv,
            "path_vs_raw": p / r, "live_vs_raw": lv / r}


# ----------------------------------------------------------------------------- 3. idle CPU


def cpu_share(pid: int, seconds: float) -> float:
    p = psutil.Process(pid)
    c0 = sum(p.cpu_times()[:2])
    t0 = time.monotonic()
    time.sleep(seconds)
    return (sum(p.cpu_times()[:2]) - c0) / (time.monotonic() - t0)


def bench_idle(root: Path, seconds: float) -> dict[str, float]:
    home = root / "idle"
    store = Store(home)
    w = Worker(home)
    try:
        idle = cpu_share(w.proc.pid, seconds)
        jid = submit(store, [PY, "-c", "import time; time.sleep(600)"])
        wait(lambda: status(store, jid) == "running", 30)
        time.sleep(1.0)
        watching = cpu_share(w.proc.pid, seconds)
        from db.queue import request_cancel

        with store.write() as s:
            request_cancel(s, jid)
        wait(lambda: status(store, jid) == "cancelled", 60)
    finally:
        w.stop()
    return {"idle_pct_of_core": 100 * idle, "one_job_pct_of_core": 100 * watching, "window_s": seconds}


# ----------------------------------------------------------------------------- 4. overhead


def bench_overhead(root: Path, n: int) -> dict[str, float]:
    home = root / "overhead"
    store = Store(home)
    cmd = [PY, "-c", "import time; time.sleep(0.5)"]
    direct = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        direct.append(time.perf_counter() - t0)
    w = Worker(home)
    through, inside = [], []
    try:
        for _ in range(n):
            t0 = time.time()
            jid = submit(store, cmd)
            wait(lambda jid=jid: status(store, jid) == "succeeded", 60, 0.005)
            through.append(time.time() - t0)
            q, s, f = times(store, jid)
            inside.append(f - s)
    finally:
        w.stop()
    d, t, i = statistics.median(direct), statistics.median(through), statistics.median(inside)
    return {"direct_s": d, "submit_to_succeeded_s": t, "started_to_finished_s": i, "overhead_s": t - d,
            "ratio": t / d}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, shorter windows")
    args = ap.parse_args()
    n_lat, n_rows, idle_s, n_over = (10, 50_000, 5.0, 3) if args.quick else (40, 200_000, 20.0, 8)
    cpu = os.cpu_count()
    print(f"labdeck worker benchmarks  (python {sys.version.split()[0]}, {cpu} CPUs, load {os.getloadavg()[0]:.2f})")
    with tempfile.TemporaryDirectory(prefix="labdeck-bench-") as d:
        root = Path(d)
        r = bench_latency(root, n_lat)
        print(f"\n1. queued -> running, {n_lat} jobs (goal p50 < 0.5 s)")
        print(f"   claim committed : p50 {r['claim_p50']*1000:6.0f} ms  p90 {r['claim_p90']*1000:6.0f} ms  max {r['claim_max']*1000:6.0f} ms")
        print(f"   job process runs: p50 {r['proc_p50']*1000:6.0f} ms  p90 {r['proc_p90']*1000:6.0f} ms")
        r = bench_ingest(root, n_rows)
        print(f"\n2. metric ingestion, {n_rows} rows (goal >= 100k rows/s and >= 1/3 of raw)")
        print(f"   raw SQLAlchemy Core insert : {r['raw_core_rows_s']:10,.0f} rows/s")
        print(f"   engine.ingest (file -> db) : {r['ingest_path_rows_s']:10,.0f} rows/s  ({r['path_vs_raw']:.2f} x raw)")
        print(f"   live worker (job -> db)    : {r['live_worker_rows_s']:10,.0f} rows/s  ({r['live_vs_raw']:.2f} x raw)")
        r = bench_idle(root, idle_s)
        print(f"\n3. worker CPU over {idle_s:.0f} s (goal idle < 1% of a core)")
        print(f"   idle                  : {r['idle_pct_of_core']:.2f}% of a core")
        print(f"   watching 1 silent job : {r['one_job_pct_of_core']:.2f}% of a core")
        r = bench_overhead(root, n_over)
        print(f"\n4. command job wall time, `python -c 'sleep 0.5'`, median of {n_over}")
        print(f"   direct subprocess.run   : {r['direct_s']*1000:6.0f} ms")
        print(f"   submit -> succeeded     : {r['submit_to_succeeded_s']*1000:6.0f} ms  (+{r['overhead_s']*1000:.0f} ms, {r['ratio']:.2f} x)")
        print(f"   started_at -> finished_at: {r['started_to_finished_s']*1000:6.0f} ms")


if __name__ == "__main__":
    main()
