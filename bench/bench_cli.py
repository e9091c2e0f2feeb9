"""CLI start-up and submit throughput (issue 2). Prints figures; asserts nothing.

* `labdeck --help` wall time next to a bare `python -c pass` in the same run (goal: under 0.5 s).
* `labdeck submit` of a 10,000-point sweep: jobs stored per second, end to end (parse, validate,
  expand, one transaction).

Run: `.venv/bin/python bench/bench_cli.py`
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str], n: int = 15) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LABDECK_HOME=str(Path(tmp) / "home"))
        bare = timed([sys.executable, "-c", "pass"], env)
        helped = timed([sys.executable, "-m", "cli", "--help"], env)
        ls = timed([sys.executable, "-m", "cli", "ls", "--json"], env, n=5)
        b, h, s = statistics.median(bare), statistics.median(helped), statistics.median(ls)
        print(f"python -c pass      median {b * 1000:7.1f} ms")
        print(f"labdeck --help      median {h * 1000:7.1f} ms   ({h / b:.1f}x bare python; goal < 500 ms)")
        print(f"labdeck ls (empty)  median {s * 1000:7.1f} ms   ({s / b:.1f}x bare python)")

        spec = Path(tmp) / "sweep.yaml"
        spec.write_text(
            "experiment: big\nname: point\nkind: command\ncommand: [python, -c, pass]\n"
            "sweep:\n  grid:\n    env.A: [" + ", ".join(f"'{i}'" for i in range(100)) + "]\n"
            "    env.B: [" + ", ".join(f"'{i}'" for i in range(100)) + "]\n"
        )
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "cli", "submit", str(spec), "--no-worker", "--json"],
                           env=env, check=True, capture_output=True, text=True)  # noqa: S603
        dt = time.perf_counter() - t
        import json

        n = len(json.loads(r.stdout)["ids"])
        print(f"submit sweep        {n} jobs in {dt:.2f} s = {n / dt:,.0f} jobs/s (process start included)")


if __name__ == "__main__":
    main()
