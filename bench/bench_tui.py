"""Benchmark the terminal app on a large store: 100,000 jobs and 10 million metric rows.

Prints (never asserts):
  1. the read queries the app makes, timed on the large store;
  2. cold start of the real app in a pseudo-terminal, to its first frame and to the first frame
     with jobs in it, next to a bare Textual app started in the same run (goals: < 1 s, <= 2x bare);
  3. key-press latency on the jobs table: `j` pressed, time to the terminal's first byte of the
     repaint (goal < 50 ms), including presses that cross into the next page of 100 rows;
  4. idle CPU of the app over a quiet period (goal < 2% of a core), and while another process
     commits every second as a worker does (heartbeat, GPU snapshot, progress).

The store is built with raw sqlite3 executemany and cached under /tmp (LABDECK_BENCH_DIR), so a
rerun starts in seconds. `--quick` uses 10,000 jobs and 1 million metric rows.

Run: PYTHONPATH=. python bench/bench_tui.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import random
import select
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import termios
import textwrap
import time
from fcntl import ioctl
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STATUSES = ["succeeded"] * 90 + ["failed"] * 4 + ["cancelled"] * 2 + ["interrupted"]
KINDS = ["finetune", "generate", "score", "merge", "command"]


# ----------------------------------------------------------------------------- the store


def build_store(home: Path, n_jobs: int, n_metrics: int, n_exp: int | None = None) -> Path:
    """A labdeck home with `n_jobs` jobs in `n_exp` experiments (one per 500 jobs by default) and
    `n_metrics` metric rows; reused when already built."""
    from db.migrations import SCHEMA_VERSION

    marker = home / "bench.json"
    want = {"jobs": n_jobs, "metrics": n_metrics, "schema": SCHEMA_VERSION, "v": 2, "experiments": n_exp}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return home
    if home.exists():
        for p in home.glob("labdeck.db*"):
            p.unlink()
    from db.session import Store

    Store(home).dispose()  # the schema, through the real migrations
    t0 = time.perf_counter()
    con = sqlite3.connect(home / "labdeck.db", isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    n_exp = n_exp or max(1, n_jobs // 500)
    con.executemany("INSERT INTO experiment (id, name, description, created_at) VALUES (?, ?, '', ?)",
                    [(i + 1, f"exp-{i:04d}", 1.7e9 + i) for i in range(n_exp)])
    rng = random.Random(0)
    now = time.time()
    jobs = []
    for j in range(1, n_jobs + 1):
        exp = (j - 1) * n_exp // n_jobs + 1
        kind = KINDS[j % len(KINDS)]
        status = "queued" if j > n_jobs - 300 else ("running" if j > n_jobs - 340 else rng.choice(STATUSES))
        started = None if status == "queued" else now - 3600 + j % 600
        finished = None if status in ("queued", "running") else (started or now) + 300
        done = 37.0 if status == "running" else (100.0 if status == "succeeded" else None)
        params = json.dumps({"lr": [1e-5, 2e-5, 5e-5][j % 3], "seed": j % 2})
        spec = json.dumps({"kind": kind, "experiment": f"exp-{exp - 1:04d}", "name": f"{kind}-{j}",
                           "learning_rate": [1e-5, 2e-5, 5e-5][j % 3], "seed": j % 2})
        jobs.append((j, exp, f"{kind}-{j}[lr={[1e-5, 2e-5, 5e-5][j % 3]:g},seed={j % 2}]", kind, spec, params, status,
                     j % 7, now - 7200 + j * 0.01, started, finished, done, 100.0 if done is not None else None,
                     600.0 if status == "running" else None, str(j % 8) if status == "running" else ""))
    con.executemany(
        "INSERT INTO job (id, experiment_id, name, kind, spec, params, status, priority, queued_at, started_at, "
        "finished_at, progress_done, progress_total, eta_s, assigned_gpus) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        jobs,
    )
    per_job = max(1, n_metrics // n_jobs)
    batch: list[tuple] = []
    mid = 0
    for j in range(1, n_jobs + 1):
        for step in range(per_job - 1):
            mid += 1
            batch.append((mid, j, "loss", step, 2.0 * 0.98 ** step, now))
        mid += 1
        batch.append((mid, j, "win_rate", None, 0.3 + (j % 40) / 100, now))
        if len(batch) >= 200_000:
            con.executemany("INSERT INTO metric (id, job_id, name, step, value, time) VALUES (?,?,?,?,?,?)", batch)
            batch.clear()
    if batch:
        con.executemany("INSERT INTO metric (id, job_id, name, step, value, time) VALUES (?,?,?,?,?,?)", batch)
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    con.close()
    marker.write_text(json.dumps(want))
    print(f"built {n_jobs:,} jobs and {mid:,} metric rows in {time.perf_counter() - t0:.0f} s at {home}")
    return home


# ----------------------------------------------------------------------------- queries


def bench_queries(home: Path) -> None:
    from db import queries as Q
    from db.session import Store
    from tui.source import JobQuery, Source

    src = Source(store=Store(home))
    rows = []

    def timed(label: str, fn, repeat: int = 5) -> None:  # noqa: ANN001
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        rows.append((label, statistics.median(times) * 1000))

    total = 0
    with src.store.read() as s:
        total = sum(Q.count_jobs(s).values())
        exp = Q.experiment_names(s)[0]
    timed("fingerprint (2 stat calls)", src.fingerprint)
    timed("overview: worker, GPUs, counts, experiments", src.overview)
    timed("jobs page 1 (newest, 100 rows + latest metrics)", lambda: src.jobs_page(JobQuery(), 0))
    timed(f"jobs page at offset {total - 100:,}", lambda: src.jobs_page(JobQuery(), total - 100))
    timed("jobs page sorted by status", lambda: src.jobs_page(JobQuery(sort="status"), 0))
    timed("jobs page sorted by name", lambda: src.jobs_page(JobQuery(sort="name"), 0))
    timed("jobs page, text filter 'merge-99'", lambda: src.jobs_page(JobQuery.parse("merge-99"), 0))
    timed("jobs page, status:running", lambda: src.jobs_page(JobQuery.parse("status:running"), 0))
    timed(f"jobs page, exp:{exp}", lambda: src.jobs_page(JobQuery.parse(f"exp:{exp}"), 0))
    timed("job detail + metric names", lambda: src.detail(total // 2))
    timed("metric series (loss)", lambda: src.series(total // 2, ["loss"]))
    timed(f"results of {exp} (500 jobs)", lambda: src.results(exp, "win_rate"))
    src.store.dispose()
    print("\nqueries on the large store (median of 5, ms)")
    for label, ms in rows:
        print(f"  {label:<52} {ms:8.1f}")


def bench_experiments(base: Path, runs: int) -> None:
    """The experiments screen at 10,000 experiments and 100,000 jobs, against the jobs screen in the
    same run: the first page of each as a query, and in the app the time from pressing `e` to the
    painted list against the jobs screen's own first paint."""
    from db.session import Store
    from tui.source import JobQuery, Source

    n_jobs, n_exp = 100_000, 10_000
    home = build_store(base / f"home-{n_jobs}-exp-{n_exp}", n_jobs, n_jobs, n_exp=n_exp)
    src = Source(store=Store(home))

    def med(fn, repeat: int = 5) -> float:  # noqa: ANN001
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    jobs_ms = med(lambda: src.jobs_page(JobQuery(), 0))
    exp_ms = med(lambda: src.experiments())
    filt_ms = med(lambda: src.experiments("exp-09", ("failed",)))
    pipe_ms = med(lambda: src.pipeline("exp-5000"))
    # half the experiments archived (hidden from both lists), then restored for the app's figures below
    import sqlite3

    con = sqlite3.connect(home / "labdeck.db")
    con.execute("UPDATE experiment SET archived_at = 1 WHERE id % 2 = 0")
    con.commit()
    jobs_arch_ms = med(lambda: src.jobs_page(JobQuery(), 0))
    exp_arch_ms = med(lambda: src.experiments())
    con.execute("UPDATE experiment SET archived_at = NULL")
    con.commit()
    con.close()
    src.store.dispose()
    print(f"\nexperiments screen: {n_exp:,} experiments, {n_jobs:,} jobs (median of 5, ms)")
    print(f"  jobs page 1 (the jobs screen's read)                {jobs_ms:8.1f}")
    print(f"  experiments page 1 (aggregated in SQL)              {exp_ms:8.1f}   {exp_ms / jobs_ms:5.1f}x jobs page")
    print(f"  experiments, filter 'exp-09 status:failed'          {filt_ms:8.1f}")
    print(f"  one experiment's pipeline (10 jobs)                 {pipe_ms:8.1f}")
    print(f"  half the experiments archived: jobs page 1          {jobs_arch_ms:8.1f}   {jobs_arch_ms / jobs_ms:5.1f}x none archived")
    print(f"  half the experiments archived: experiments page 1   {exp_arch_ms:8.1f}   {exp_arch_ms / exp_ms:5.1f}x none archived")
    first, press, again = [], [], []
    marker = f"of {n_exp:,}".encode()
    for _ in range(runs):
        t = Term(labdeck_argv(home))
        first.append(t.read_until(f"of {n_jobs:,}".encode()))
        t.drain()
        t0 = time.perf_counter()
        os.write(t.master, b"e")  # at once: the store is still being opened in the background
        t.read_until(marker)
        press.append(time.perf_counter() - t0)
        t.drain(limit=5.0)
        os.write(t.master, b"1")
        t.drain()
        t.buf = b""
        t0 = time.perf_counter()
        os.write(t.master, b"e")  # again, warm: a reload of the list
        t.read_until(marker)
        again.append(time.perf_counter() - t0)
        t.close()
    f, p, a = statistics.median(first), statistics.median(press), statistics.median(again)
    print(f"  app: jobs screen first paint {f:.3f} s; 'e' pressed at once to the painted list {p:.3f} s "
          f"({p / f:.2f}x), pressed again later {a:.3f} s ({a / f:.2f}x the jobs first paint), median of {runs}")


# ----------------------------------------------------------------------------- a pseudo-terminal


class Term:
    """A child process on a pseudo-terminal of a given size; reads its output with timestamps."""

    def __init__(self, argv: list[str], cols: int = 80, rows: int = 24, env: dict[str, str] | None = None) -> None:
        self.master, slave = pty.openpty()
        ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows),
                    "PYTHONPATH": str(ROOT), **(env or {})}
        full_env.pop("NO_COLOR", None)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=full_env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.buf = b""

    def read_until(self, marker: bytes, timeout: float = 30.0) -> float:
        """Seconds from start until `marker` appears in the output."""
        end = time.perf_counter() + timeout
        while marker not in self.buf:
            left = end - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{marker!r} not seen; last output: {self.buf[-300:]!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:
                    raise TimeoutError("the process ended") from None
        return time.perf_counter() - self.t0

    def drain(self, quiet: float = 0.05, limit: float = 2.0) -> None:
        end = time.perf_counter() + limit
        while time.perf_counter() < end:
            r, _, _ = select.select([self.master], [], [], quiet)
            if not r:
                return
            try:
                self.buf += os.read(self.master, 65536)
            except OSError:
                return

    def key(self, data: bytes, timeout: float = 5.0) -> float:
        """Send a key; seconds until the first byte of the answer (then read the rest of the frame)."""
        self.drain()
        t = time.perf_counter()
        os.write(self.master, data)
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return float("nan")
        latency = time.perf_counter() - t
        self.buf += os.read(self.master, 65536)
        self.drain(quiet=0.02)
        return latency

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)


BARE = textwrap.dedent("""
    from textual.app import App
    from textual.widgets import Footer, Static
    class Bare(App):
        def compose(self):
            yield Static("bare textual app ready")
            yield Footer()
    Bare().run()
""")


def labdeck_argv(home: Path) -> list[str]:
    # what `labdeck --home HOME` runs, without starting a worker (the benchmark measures the app)
    return [sys.executable, "-c", f"from tui.app import run_app; run_app({str(home)!r}, start_worker=False)"]


def bench_start(home: Path, total: int, runs: int) -> None:
    """Wall time to each frame, and the CPU the process had used by then (steadier on a busy box)."""
    bare, first, data = [], [], []
    data_marker = f"of {total:,}".encode()
    for _ in range(runs):
        t = Term([sys.executable, "-c", BARE])
        bare.append((t.read_until(b"bare textual app ready"), t.cpu_seconds()))
        t.close()
        t = Term(labdeck_argv(home))
        first.append((t.read_until(b"labdeck"), t.cpu_seconds()))
        data.append((t.read_until(data_marker), t.cpu_seconds()))
        t.close()

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    b, f, d = med(bare, 0), med(first, 0), med(data, 0)
    bc, fc, dc = med(bare, 1), med(first, 1), med(data, 1)
    print(f"\ncold start in an 80x24 pseudo-terminal, median of {runs} runs: wall s (process CPU s)")
    print(f"  bare Textual app, first frame                   {b:6.3f} ({bc:5.2f})")
    print(f"  labdeck, first frame (status line, empty table) {f:6.3f} ({fc:5.2f})   {f / b:4.2f}x bare")
    print(f"  labdeck, first frame with jobs ({total:,})     {d:6.3f} ({dc:5.2f})   {d / b:4.2f}x bare")
    print(f"  (wall, all runs: bare {', '.join(f'{x:.2f}' for x, _ in bare)}; first "
          f"{', '.join(f'{x:.2f}' for x, _ in first)}; jobs {', '.join(f'{x:.2f}' for x, _ in data)})")


def bench_keys_and_idle(home: Path, total: int, presses: int, idle_s: float) -> None:
    t = Term(labdeck_argv(home), env={"LABDECK_REFRESH_S": "1.0"})
    try:
        t.read_until(f"of {total:,}".encode())
        time.sleep(3.0)  # let the warm-up (the store, the other screens) finish: steady state
        t.drain()
        lat = []
        crossing = []
        for i in range(presses):
            ms = t.key(b"j") * 1000
            (crossing if i % 100 == 99 else lat).append(ms)
        lat.sort()
        print(f"\nkey-press latency, 'j' on the jobs table ({presses} presses; time to the first byte of the repaint)")
        print(f"  within a page:  median {statistics.median(lat):5.1f} ms   p95 {lat[int(len(lat) * 0.95)]:5.1f} ms"
              f"   max {lat[-1]:5.1f} ms")
        if crossing:
            print(f"  into the next page of 100 (a query): {', '.join(f'{x:.1f}' for x in crossing)} ms")
        time.sleep(2.0)
        t.drain()
        c0, w0 = t.cpu_seconds(), time.perf_counter()
        end = w0 + idle_s
        while time.perf_counter() < end:
            t.drain(quiet=0.5, limit=end - time.perf_counter())
        c1, w1 = t.cpu_seconds(), time.perf_counter()
        print(f"\nidle CPU over {idle_s:.0f} s, nothing committed: {100 * (c1 - c0) / (w1 - w0):.2f}% of one core")
        busy = _committer(home)
        try:
            time.sleep(2.0)
            t.drain()
            c0, w0 = t.cpu_seconds(), time.perf_counter()
            end = w0 + idle_s
            while time.perf_counter() < end:
                t.drain(quiet=0.5, limit=end - time.perf_counter())
            c1, w1 = t.cpu_seconds(), time.perf_counter()
        finally:
            busy.terminate()
            busy.wait()
        print(f"idle CPU over {idle_s:.0f} s, another process committing every second: "
              f"{100 * (c1 - c0) / (w1 - w0):.2f}% of one core")
    finally:
        t.close()


COMMITTER = textwrap.dedent("""
    import json, sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
    con.execute("PRAGMA busy_timeout = 10000")
    i = 0
    while True:
        i += 1
        con.execute("BEGIN IMMEDIATE")
        snap = {"t": time.time(), "gpus": [{"index": g, "name": "GPU", "mem_total_mb": 81559, "mem_used_mb": 1000 + i % 500,
                "util_pct": (i * 7 + g) % 100, "processes": []} for g in range(8)]}
        con.execute("INSERT OR REPLACE INTO setting (key, value) VALUES ('gpu_snapshot', ?)", (json.dumps(snap),))
        con.execute("UPDATE job SET progress_done = ?, eta_s = ? WHERE status = 'running'", (i % 100, 600 - i % 600))
        con.execute("COMMIT")
        time.sleep(1.0)
""")


def _committer(home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", COMMITTER, str(home / "labdeck.db")])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 jobs and 1 million metric rows")
    ap.add_argument("--runs", type=int, default=5, help="cold starts of each app (default 5)")
    ap.add_argument("--presses", type=int, default=250)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of each idle measurement")
    ap.add_argument("--experiments-only", action="store_true", help="only the experiments screen's figures")
    args = ap.parse_args()
    base = Path(os.environ.get("LABDECK_BENCH_DIR", "/tmp/labdeck-bench"))
    if args.experiments_only:
        bench_experiments(base, args.runs)
        return 0
    n_jobs, n_metrics = (10_000, 1_000_000) if args.quick else (100_000, 10_000_000)
    base = Path(os.environ.get("LABDECK_BENCH_DIR", "/tmp/labdeck-bench"))
    home = build_store(base / f"home-{n_jobs}-{n_metrics}", n_jobs, n_metrics)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    bench_queries(home)
    bench_start(home, n_jobs, args.runs)
    bench_keys_and_idle(home, n_jobs, args.presses, args.idle)
    bench_experiments(base, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
