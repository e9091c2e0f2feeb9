"""`labdeck demo`: the CAR-style pipeline on tiny local models, from nothing to results.

It queues `engine/recipes/demo_car.yaml` in a home of its own (`--home`, default
`~/.local/share/labdeck-demo`), starts a worker for it, and either opens the app on the results
or, with `--no-tui`, waits and prints the students × teachers win-rate pivot, the CAR pivot and
Spearman's rho of CAR against the win rate per student. Running it again reopens the same results
(`--fresh` starts over). This module never imports torch: the models are built by the pipeline's
first job.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

from cli.common import AddCommand

RECIPE = Path(__file__).resolve().parent.parent / "engine" / "recipes" / "demo_car.yaml"
MARKER = ".labdeck-demo"  # written by the demo into a home it created: only such a home may be wiped
EXPERIMENT = "demo-car"
DEMO_CPU_SLOTS = 2
TIMEOUT_S = 1800.0


def demo_home(explicit: str | None) -> Path:
    from db.home import default_home

    return Path(explicit).expanduser() if explicit else default_home().with_name("labdeck-demo")


def is_demo_home(home: Path) -> bool:
    return (home / MARKER).is_file()


def _wipe(home: Path) -> None:
    """Remove a previous demo home: only one the demo created (its marker), never while a worker runs.

    `--home` can name any folder, a real home included; a real home holds someone's runs, so
    `--fresh` refuses every folder without the demo's marker, and a home whose worker is alive
    (its jobs may be running) whatever it is.
    """
    from cli.common import UserError
    from engine.control import worker_alive

    if not home.exists():
        return
    if not is_demo_home(home):
        raise UserError(f"{home}: not a home the demo created (no {MARKER}); --fresh deletes only the demo's own home")
    if worker_alive(home):
        raise UserError(f"{home}: a worker is running there; stop it first (labdeck --home {home} worker stop --now --wait)")
    shutil.rmtree(home)


def _claim_home(home: Path, explicit: bool) -> None:
    """Make `home` the demo's: create it with the marker, or check that an existing one is the demo's."""
    from cli.common import UserError
    from db.home import DB_NAME, ensure_home

    if (home / DB_NAME).exists() and not is_demo_home(home):
        if explicit:
            raise UserError(f"{home}: a labdeck home the demo did not create; give the demo a folder of its own")
    ensure_home(home)
    (home / MARKER).write_text("labdeck demo home: `labdeck demo --fresh` may delete this folder\n")


def _queue_demo(store) -> list[int]:  # noqa: ANN001 - db.session.Store
    from db.queue import enqueue
    from engine.specfile import expand_file

    expansion = expand_file(RECIPE)
    with store.write() as s:
        return enqueue(s, expansion.drafts, resolve=expansion.resolver(store.home))


def _start_worker(home: Path) -> None:
    from engine.control import start_detached, worker_alive

    if not worker_alive(home):
        ok, message = start_detached(home, None, cpu_slots=DEMO_CPU_SLOTS)
        if not ok:
            raise SystemExit(f"labdeck: {message}")


def _wait(store, quiet: bool = False) -> list:  # noqa: ANN001
    """Poll until every demo job has finished; print a line whenever the counts change."""
    from db.queries import list_jobs

    start = time.time()
    last = ""
    while True:
        with store.read() as s:
            rows = list_jobs(s, experiment=EXPERIMENT)
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.status] = counts.get(r.status, 0) + 1
        running = ", ".join(sorted(r.name for r in rows if r.status == "running"))
        line = " ".join(f"{k} {v}" for k, v in sorted(counts.items())) + (f" | running: {running}" if running else "")
        if line != last and not quiet:
            print(f"[{time.time() - start:5.0f}s] {line}", flush=True)
            last = line
        if rows and all(r.status not in ("queued", "running") for r in rows):
            return rows
        if time.time() - start > TIMEOUT_S:
            raise SystemExit(f"labdeck: the demo did not finish in {TIMEOUT_S:.0f} s; see `labdeck --home {store.home} ls`")
        time.sleep(1.0)


def print_results(store) -> bool:  # noqa: ANN001
    """The demo's tables. False when a metric is missing (some stage failed)."""
    from cli.results import print_pivot
    from db.queries import experiment_metric
    from db.results import correlate, pivot, where

    with store.read() as s:
        win = where(experiment_metric(s, EXPERIMENT, "win_rate"), ["stage=judge"])
        car = where(experiment_metric(s, EXPERIMENT, "car"), ["stage=compat"])
    ok = True
    for rows, metric in ((win, "win_rate"), (car, "car")):
        p = pivot(rows, EXPERIMENT, metric, "student", "teacher")
        if not p.cells:
            print(f"no job reported {metric}", file=sys.stderr)
            ok = False
            continue
        print_pivot(p)
    result = correlate(car, win, ["teacher"], "student")
    rhos = [c.rho for c in result if not math.isnan(c.rho)]
    print("Spearman rho of CAR against win rate, per student (docs/science.md §4.2):")
    for c in result:
        print(f"  {c.group:16} n={c.n}  rho={c.rho:+.3f}")
    if rhos:
        print(f"  {'average':16}      rho={sum(rhos) / len(rhos):+.3f}")
    else:
        ok = False
    return ok


def run_demo(args: argparse.Namespace) -> int:
    from db.queries import experiments
    from db.session import open_store

    home = demo_home(args.home).absolute()
    if args.fresh:
        _wipe(home)
    _claim_home(home, explicit=bool(args.home))
    store = open_store(home)
    with store.read() as s:
        queued_before = any(name == EXPERIMENT for name, _ in experiments(s))
    if not queued_before:
        ids = _queue_demo(store)
        print(f"labdeck demo: queued {len(ids)} jobs in {home}", flush=True)
    _start_worker(home)
    if not args.no_tui:
        from tui.app import run_app

        code = run_app(home=home, start_worker=False,
                       results={"experiment": EXPERIMENT, "metric": "win_rate", "rows": "student", "cols": "teacher"})
        print(where_the_demo_lives(home))
        return code
    rows = _wait(store)
    failed = [r for r in rows if r.status != "succeeded"]
    for r in failed:
        print(f"job {r.id} {r.name}: {r.status} ({r.failure_reason}); `labdeck --home {home} show {r.id}`", file=sys.stderr)
    ok = print_results(store)
    print(where_the_demo_lives(home))
    return 0 if ok and not failed else 1


def where_the_demo_lives(home: Path) -> str:
    """What a person needs after the demo: its home is not theirs, and its worker outlives the app."""
    return (f"The demo's home is {home} (plain `labdeck` shows your own home, not this one).\n"
            f"Its worker keeps running: `labdeck --home {home} worker stop`; look again with `labdeck --home {home}`.")


def register(add: AddCommand) -> None:
    sp = add("demo", run_demo, "Build tiny local models and run a CAR-style pipeline end to end (no network, no GPU)")
    sp.add_argument("--no-tui", action="store_true", help="run headless and print the final tables")
    sp.add_argument("--fresh", action="store_true",
                    help="start the demo home from scratch (only a home the demo created, with no worker running)")
