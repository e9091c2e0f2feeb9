"""`labdeck experiments` and `labdeck du`: the experiments screen and its disk column, for scripts.

The same reads as the app (`db.experiments`): jobs by state aggregated in SQL, most recently
active first, and the bytes each experiment's run folders take.
"""

from __future__ import annotations

import argparse
import json

from cli.common import STATUSES, AddCommand, UserError
from cli.common import open_home_store as _store


def cmd_experiments(args: argparse.Namespace) -> int:
    from db.experiments import experiment_rows

    store = _store(args)
    try:
        with store.read() as s:
            rows, total = experiment_rows(s, text=args.filter, statuses=tuple(args.status or ()), limit=args.limit)
    finally:
        store.dispose()
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(header_style="bold", box=None, padding=(0, 2))
    for col, justify in (("experiment", "left"), ("jobs", "right"), ("by state", "left"), ("done", "right"),
                         ("GPUs", "right"), ("description", "left")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        states = " ".join(f"{k} {v}" for k, v in r.counts.items())
        done = "" if r.progress is None else f"{r.progress * 100:.0f}%"
        t.add_row(r.name, str(r.jobs), states, done, str(r.gpus_in_use or "-"), r.description)
    Console().print(t)
    if total > len(rows):
        print(f"({len(rows)} of {total} experiments; --limit shows more)")
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    from db.experiments import folder_bytes, run_dirs
    from db.queries import experiment_names

    store = _store(args)
    try:
        with store.read() as s:
            known = experiment_names(s)
            names = list(args.experiments) or known
            folders = run_dirs(s, names)
    finally:
        store.dispose()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"experiment {unknown[0]!r}: no such experiment")
    sizes = {n: sum(folder_bytes(f) for f in fs) for n, fs in folders.items()}
    if args.json:
        print(json.dumps(sizes, indent=2))
        return 0
    for name, n in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{n / 2**20:10.1f} MiB  {name}")
    return 0


def register(add: AddCommand) -> None:
    sp = add("experiments", cmd_experiments, "List experiments: jobs by state, progress, GPUs in use (most recently active first)")
    sp.add_argument("filter", nargs="?", default=None, help="text in the name or description")
    sp.add_argument("-s", "--status", action="append", choices=STATUSES, help="only experiments with a job in this state")
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--json", action="store_true")
    sp = add("du", cmd_du, "Disk the run folders of experiments take (all of them by default)")
    sp.add_argument("experiments", nargs="*", metavar="EXPERIMENT")
    sp.add_argument("--json", action="store_true")
