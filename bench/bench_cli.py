"""CLI start-up, inspection and submit throughput. Prints figures; asserts nothing.

* `labdeck --help` wall time next to a bare `python -c pass` in the same run (goal: under 0.5 s).
* The inspection commands (`ls`, `show`, `logs`, `results`, `worker status`) on an empty and on a
  one-job home, as a ratio to `--help` measured in the same run (goal: at most 3x).
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


def timed(cmd: list[str], env: dict[str, str], n: int = 15, check: bool = True) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LABDECK_HOME=str(Path(tmp) / "home"))
        bare = timed([sys.executable, "-c", "pass"], env)
        helped = timed([sys.executable, "-m", "cli", "--help"], env)
        b, h = statistics.median(bare), statistics.median(helped)
        print(f"python -c pass      median {b * 1000:7.1f} ms")
        print(f"labdeck --help      median {h * 1000:7.1f} ms   ({h / b:.1f}x bare python; goal < 500 ms)")
        from db.session import open_store

        open_store(env["LABDECK_HOME"]).dispose()  # an empty home: inspection commands never create one
        s = statistics.median(timed([sys.executable, "-m", "cli", "ls", "--json"], env, n=9))
        print(f"labdeck ls (empty)  median {s * 1000:7.1f} ms   ({s / h:.1f}x --help; goal <= 3x)")
        one = Path(tmp) / "one.yaml"
        one.write_text("experiment: e\nname: one\nkind: command\ncommand: [python, -c, pass]\n")
        subprocess.run([sys.executable, "-m", "cli", "submit", str(one), "--no-worker"], env=env, check=True,  # noqa: S603
                       stdout=subprocess.DEVNULL)
        for argv in (["ls"], ["show", "1"], ["logs", "1"], ["worker", "status"],
                     ["results", "e", "--rows", "name", "--metric", "x", "--format", "csv"]):
            t = statistics.median(timed([sys.executable, "-m", "cli", *argv], env, n=7, check=False))
            print(f"labdeck {' '.join(argv):28} median {t * 1000:7.1f} ms   ({t / h:.1f}x --help)")

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
