"""`labdeck experiments`, `du` and `archive`: the experiments screen, its disk column and its archive key, for scripts.

The same reads as the app (`db.experiment_reads`, plain sqlite3): jobs by state aggregated in SQL, most recently
active first, and the bytes each experiment's (and each job's) run folders take. Archiving goes
through the client layer, as the app's key does.
"""

from __future__ import annotations

import argparse
import json

from cli.common import STATUSES, AddCommand, UserError, reader
from cli.common import open_home_store as _store


def cmd_experiments(args: argparse.Namespace) -> int:
    from db.experiment_reads import experiment_rows

    archived = None if args.all else (True if args.archived else False)
    with reader(args) as con:  # plain sqlite3: an inspection command answers without importing the store
        rows, total = experiment_rows(con, text=args.filter, statuses=tuple(args.status or ()), limit=args.limit,
                                      archived=archived)
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
        name = f"{r.name} (archived)" if r.archived_at is not None else r.name
        t.add_row(name, str(r.jobs), states, done, str(r.gpus_in_use or "-"), r.description)
    Console().print(t)
    if total > len(rows):
        print(f"({len(rows)} of {total} experiments; --limit shows more)")
    return 0


def cmd_du(args: argparse.Namespace) -> int:
    from db.experiments import folder_bytes
    from db.housekeeping import run_folders_of
    from db.queries import experiment_names

    store = _store(args)
    try:
        with store.read() as s:
            known = experiment_names(s)
            names = list(args.experiments) or known
            unknown = [n for n in names if n not in known]
            if unknown:
                raise UserError(f"experiment {unknown[0]!r}: no such experiment")
            folders = run_folders_of(s, names)
    finally:
        store.dispose()
    runs = {n: [(f, folder_bytes(f.run_dir)) for f in fs] for n, fs in folders.items()}
    sizes = {n: sum(b for _, b in rs) for n, rs in runs.items()}
    if args.json:
        if args.runs:
            print(json.dumps({n: {"bytes": sizes[n], "runs": [{"id": f.id, "name": f.name, "status": f.status,
                                                                "run_dir": f.run_dir, "bytes": b} for f, b in rs]}
                              for n, rs in runs.items()}, indent=2))
        else:
            print(json.dumps(sizes, indent=2))
        return 0
    for name, n in sorted(sizes.items(), key=lambda kv: -kv[1]):
        print(f"{human_bytes(n):>10}  {name}")
        if args.runs:
            for f, b in sorted(runs[name], key=lambda fb: -fb[1]):
                print(f"{human_bytes(b):>14}  job {f.id:<6} {f.status:<11} {f.name}")
    return 0


def human_bytes(n: int) -> str:
    """1.5 GiB, 340.0 MiB, 12.0 KiB, 512 B."""
    for unit, div in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def cmd_archive(args: argparse.Namespace) -> int:
    """Hide experiments from the lists (rows and run folders kept), or bring them back."""
    from client import Client, ClientError

    restore = args.restore or args.command_name == "unarchive"
    try:
        done = Client(args.home).archive(args.experiments, restore=restore)
    except ClientError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps([{"experiment": n, "archived": not restore, "changed": c} for n, c in done]))
        return 0
    for name, changed in done:
        word = "restored" if restore else "archived"
        print(f"{word} {name}" if changed else f"{name}: already {word if not restore else 'not archived'}")
    return 0


def register(add: AddCommand) -> None:
    sp = add("experiments", cmd_experiments, "List experiments: jobs by state, progress, GPUs in use (most recently active first)")
    sp.add_argument("filter", nargs="?", default=None, help="text in the name or description")
    sp.add_argument("-s", "--status", action="append", choices=STATUSES, help="only experiments with a job in this state")
    sp.add_argument("--limit", type=int, default=100)
    which = sp.add_mutually_exclusive_group()
    which.add_argument("--archived", action="store_true", help="only archived experiments")
    which.add_argument("--all", action="store_true", help="archived experiments too")
    sp.add_argument("--json", action="store_true")
    sp = add("du", cmd_du, "Disk the run folders of experiments take (all of them by default)")
    sp.add_argument("experiments", nargs="*", metavar="EXPERIMENT")
    sp.add_argument("--runs", action="store_true", help="also each job's run folder, largest first")
    sp.add_argument("--json", action="store_true")
    for name, text in (("archive", "Archive experiments: hidden from `experiments`, `ls` and the app's lists, "
                        "kept on disk (refused while a job of theirs is queued or running)"),
                       ("unarchive", "Restore archived experiments (the same as `archive --restore`)")):
        sp = add(name, cmd_archive, text)
        sp.set_defaults(command_name=name)
        sp.add_argument("experiments", nargs="+", metavar="EXPERIMENT")
        if name == "archive":
            sp.add_argument("--restore", action="store_true", help="bring them back instead")
        else:
            sp.set_defaults(restore=True)
        sp.add_argument("--json", action="store_true", help='print [{"experiment": ..., "archived": ..., "changed": ...}]')
