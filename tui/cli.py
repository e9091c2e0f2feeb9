"""The `labdeck` command.

`labdeck` alone opens the terminal app; subcommands queue, inspect and export work from scripts.
Only argparse is imported at start-up, every handler imports what it needs, so `labdeck --help`
answers in a fraction of a second and nothing here ever loads torch.

Errors a person can fix (a bad spec file, an unknown job id) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted", "skipped")
KINDS = ("command", "generate", "score", "finetune", "merge")  # engine.specs.KINDS, without importing it


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def _store(args: argparse.Namespace):  # noqa: ANN202 - db.session.Store, imported lazily
    from db.session import open_store

    return open_store(args.home)


def _job_ids(values: Sequence[str]) -> list[int]:
    ids = []
    for v in values:
        try:
            ids.append(int(v))
        except ValueError:
            raise UserError(f"job id {v!r}: not a number") from None
    return ids


def _require_jobs(session, ids: Sequence[int]) -> None:  # noqa: ANN001
    from db.queries import job_ids_exist

    missing = job_ids_exist(session, ids)
    if missing:
        raise UserError(f"job {missing[0]}: no such job")


# ----------------------------------------------------------------------------- submit


def cmd_submit(args: argparse.Namespace) -> int:
    from db.queue import UnknownJob, enqueue
    from engine.specfile import SpecError, expand_file

    variables = {}
    for item in args.var or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--var {item!r}: write NAME=VALUE")
        variables[name] = value
    expansions = []
    for f in args.files:
        try:
            expansions.append(expand_file(resolve_spec_file(f), variables, args.variant))
        except SpecError as e:
            raise UserError(str(e)) from None
    store = _store(args)
    all_ids: list[int] = []
    try:
        with store.write() as s:  # one transaction: every file's jobs land, or none do
            for exp in expansions:
                all_ids += enqueue(s, exp.drafts, resolve=exp.resolver(store.home))
    except UnknownJob as e:
        raise UserError(f"{args.files[0]}: after: {e}") from None
    if args.json:
        print(json.dumps({"ids": all_ids}))
    else:
        for i in all_ids:
            print(i)
    if not args.no_worker:
        from tui.cli_worker import ensure_worker

        ensure_worker(store.home, quiet=True)
    return 0


def resolve_spec_file(name: str) -> str:
    """A path as given, or, when no such file exists, the shipped recipe of that name (`expo`, `calibration`)."""
    from engine.recipes import recipe_path

    if Path(name).exists():
        return name
    shipped = recipe_path(name)
    return str(shipped) if shipped is not None else name


def cmd_recipes(args: argparse.Namespace) -> int:
    """List the shipped recipes with their variants: what `labdeck submit NAME [--variant V]` runs."""
    from engine.recipes import list_recipes

    recipes = list_recipes()
    if args.json:
        print(json.dumps([r.as_dict() for r in recipes], indent=2))
        return 0
    for r in recipes:
        print(f"{r.name:24} {r.description}")
        for v, text in r.variants.items():
            print(f"  --variant {v:14} {text}")
        print(f"  {'':24} {r.path}")
    return 0


# ----------------------------------------------------------------------------- ls / show / logs


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def cmd_ls(args: argparse.Namespace) -> int:
    from db.queries import latest_metrics, list_jobs, worker_state

    for st in args.status or ():
        if st not in STATUSES:
            raise UserError(f"--status: {st!r} is not one of {', '.join(STATUSES)}")
    for k in args.kind or ():
        if k not in KINDS:
            raise UserError(f"--kind: {k!r} is not one of {', '.join(KINDS)}")
    store = _store(args)
    with store.read() as s:
        rows = list_jobs(s, experiment=args.experiment, statuses=args.status or (), kinds=args.kind or (),
                         text=args.filter, limit=args.limit)
        metrics = latest_metrics(s, [r.id for r in rows]) if args.metric else {}
        worker = worker_state(s)
    if args.json:
        out = [r.as_dict() | ({"metric": metrics.get(r.id, {}).get(args.metric)} if args.metric else {}) for r in rows]
        print(json.dumps(out, indent=None))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("id", "experiment", "kind", "name", "status", "gpus", "progress", "elapsed", "eta"):
        table.add_column(col)
    if args.metric:
        table.add_column(args.metric)
    now = time.time()
    for r in rows:
        frac = r.fraction
        line = [str(r.id), r.experiment, r.kind, r.name, r.status, r.assigned_gpus or (str(r.gpus_requested) if r.gpus_requested else "-"),
                "" if frac is None else f"{frac:4.0%}", _fmt_duration(r.elapsed(now)),
                _fmt_duration(r.eta_s) if r.status == "running" else ""]
        if args.metric:
            v = metrics.get(r.id, {}).get(args.metric)
            line.append("" if v is None else f"{v:.4g}")
        table.add_row(*line)
    console = Console()
    console.print(table)
    state = "online" if worker.online else "offline"
    console.print(f"[dim]worker {state} · queue {worker.queue_state} · {len(rows)} jobs[/dim]")
    return 0


def _detail(store, job: str):  # noqa: ANN001, ANN202 - Store and JobDetail, imported lazily
    """One job's detail, or a one-line error for a bad or unknown id."""
    from db.queries import job_detail
    from db.queue import UnknownJob

    (job_id,) = _job_ids([job])
    try:
        with store.read() as s:
            return job_detail(s, job_id)
    except UnknownJob as e:
        raise UserError(str(e)) from None


def cmd_show(args: argparse.Namespace) -> int:
    d = _detail(_store(args), args.job)
    if args.json:
        print(json.dumps(d.as_dict(), indent=2))
        return 0
    import yaml
    from rich.console import Console

    c = Console()
    r = d.row
    c.print(f"[bold]job {r.id}[/bold]  {r.experiment} / {r.name}  [{r.kind}]  [bold]{r.status}[/bold]")
    for label, t in (("queued", r.queued_at), ("started", r.started_at), ("finished", r.finished_at)):
        if t:
            c.print(f"  {label:9} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))}")
    if r.assigned_gpus:
        c.print(f"  gpus      {r.assigned_gpus}")
    if d.depends_on:
        c.print(f"  after     {', '.join(map(str, d.depends_on))}")
    if r.failure_reason:
        c.print(f"  [red]reason    {r.failure_reason}: {d.failure_detail}[/red]")
    if d.run_dir:
        c.print(f"  log       {d.run_dir}/log.txt")
    if d.metrics:
        c.print("metrics:")
        for k, v in sorted(d.metrics.items()):
            c.print(f"  {k:24} {v:.6g}")
    if d.artifacts:
        c.print("artifacts:")
        for a in d.artifacts:
            c.print(f"  {a.kind:10} {a.path}")
    c.print("spec:")
    c.print(yaml.safe_dump(d.spec, sort_keys=False).rstrip(), markup=False, highlight=False)
    if d.log_tail and r.status in ("failed", "interrupted"):
        c.print("last log lines:")
        c.print(d.log_tail, markup=False, highlight=False)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from db.queries import job_detail

    store = _store(args)
    d = _detail(store, args.job)
    job_id = d.row.id
    path = Path(d.run_dir) / "log.txt" if d.run_dir else None
    if path is None or not path.exists():
        if not args.follow:
            print(f"job {job_id} has no log yet ({d.row.status})", file=sys.stderr)
            return 0
    out = sys.stdout
    offset = 0
    while True:
        if path is None:
            with store.read() as s:
                d = job_detail(s, job_id)
            path = Path(d.run_dir) / "log.txt" if d.run_dir else None
        if path is not None and path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            offset += len(data)
            out.write(data.decode("utf-8", errors="replace"))
            out.flush()
        if not args.follow:
            return 0
        with store.read() as s:
            status = job_detail(s, job_id).row.status
        if status not in ("queued", "running"):
            if path is not None and path.exists() and path.stat().st_size > offset:
                continue
            return 0
        time.sleep(0.5)


# ----------------------------------------------------------------------------- cancel / retry / priority / queue


def cmd_cancel(args: argparse.Namespace) -> int:
    from db.queue import request_cancel

    ids = _job_ids(args.jobs)
    store = _store(args)
    with store.write() as s:
        _require_jobs(s, ids)
        results = [(i, request_cancel(s, i)) for i in ids]
    for i, status in results:
        word = {"cancelled": "cancelled", "running": "cancelling (the worker stops it)"}.get(status.value, f"already {status.value}")
        print(f"{i}: {word}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from db.queue import IllegalTransition, retry, retry_with_dependents

    ids = _job_ids(args.jobs)
    store = _store(args)
    try:
        with store.write() as s:
            _require_jobs(s, ids)
            mappings = [{i: retry(s, i)} if args.alone else retry_with_dependents(s, i) for i in ids]
    except IllegalTransition as e:
        raise UserError(str(e)) from None
    for old, mapping in zip(ids, mappings, strict=True):
        rest = [f"{o} -> {n}" for o, n in mapping.items() if o != old]
        print(f"{old} -> {mapping[old]}" + (f" (skipped dependents: {', '.join(rest)})" if rest else ""))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete finished jobs (or a whole experiment's) with their rows and run folders."""
    from db.queries import list_jobs
    from db.queue import IllegalTransition, UnknownJob
    from db.removal import delete_runs, folder_bytes, run_folders

    ids = _job_ids(args.jobs)
    store = _store(args)
    if args.experiment:
        with store.read() as s:
            found = [j.id for j in list_jobs(s, experiment=args.experiment)]
        if not found:
            raise UserError(f"experiment {args.experiment!r}: no such experiment, or no jobs in it")
        ids += found
    if not ids:
        raise UserError("rm: name jobs, or an experiment with -e")
    folders = run_folders(store, ids)
    what = f"{len(folders)} job(s) and their run folders ({folder_bytes(folders) / 1e6:.1f} MB)"
    if not args.yes:
        if not sys.stdin.isatty():
            raise UserError(f"rm: would delete {what}; add --yes to do it without a prompt")
        if input(f"Delete {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    try:
        delete_runs(store, ids)
    except (IllegalTransition, UnknownJob) as e:
        raise UserError(str(e)) from None
    print(f"deleted {what}")
    return 0


def cmd_priority(args: argparse.Namespace) -> int:
    from db.queue import IllegalTransition, set_priority

    ids = _job_ids(args.jobs)
    store = _store(args)
    try:
        with store.write() as s:
            _require_jobs(s, ids)
            for i in ids:
                set_priority(s, i, args.priority)
    except IllegalTransition as e:
        raise UserError(str(e)) from None
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from db.queue import set_queue_state

    store = _store(args)
    with store.write() as s:
        set_queue_state(s, {"pause": "paused", "resume": "running", "drain": "draining"}[args.action])
    print(f"queue {args.action}d" if args.action != "drain" else "queue draining: running jobs finish, nothing new starts")
    return 0


# ----------------------------------------------------------------------------- results / export


def print_pivot(p) -> None:  # noqa: ANN001 - db.results.Pivot, imported lazily
    """A pivot as a rich table on standard output (mean ± std over seeds in each cell)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{p.experiment}: {p.metric} ({p.reduce})", header_style="bold")
    t.add_column(f"{p.rows_field} \\ {p.cols_field}" if p.cols_field else p.rows_field)
    for c in p.col_labels:
        t.add_column(c, justify="right")
    for r in p.row_labels:
        t.add_row(r, *(p.cells[(r, c)].text() if (r, c) in p.cells else "" for c in p.col_labels))
    Console().print(t)
    if p.missing:
        print(f"({p.missing} jobs without {p.metric})", file=sys.stderr)


def cmd_results(args: argparse.Namespace) -> int:
    from db.queries import experiment_metric
    from db.results import pivot, where

    store = _store(args)
    try:
        with store.read() as s:
            rows = experiment_metric(s, args.experiment, args.metric, args.reduce)
        rows = where(rows, args.where or ())
    except LookupError as e:
        raise UserError(str(e).strip("'\"")) from None
    except ValueError as e:
        raise UserError(str(e)) from None
    p = pivot(rows, args.experiment, args.metric, args.rows, args.cols, args.reduce)
    if not p.cells:
        raise UserError(f"experiment {args.experiment!r}: no job reported metric {args.metric!r}")
    if args.format == "table":
        print_pivot(p)
        return 0
    from tui.formats import RENDERERS

    sys.stdout.write(RENDERERS[args.format](p))
    return 0


def cmd_correlate(args: argparse.Namespace) -> int:
    import math

    from db.queries import experiment_metric
    from db.results import correlate, where

    store = _store(args)
    try:
        with store.read() as s:
            xr = where(experiment_metric(s, args.experiment, args.x, args.reduce), args.x_where or ())
            yr = where(experiment_metric(s, args.experiment, args.y, args.reduce), args.y_where or ())
    except LookupError as e:
        raise UserError(str(e).strip("'\"")) from None
    except ValueError as e:
        raise UserError(str(e)) from None
    result = correlate(xr, yr, args.match, args.by)
    if not result:
        raise UserError(f"experiment {args.experiment!r}: no job pairs with both {args.x!r} and {args.y!r} matched on {', '.join(args.match)}")
    finite = [c.rho for c in result if not math.isnan(c.rho)]
    mean = sum(finite) / len(finite) if finite else float("nan")
    if args.json:
        print(json.dumps({"x": args.x, "y": args.y, "by": args.by, "match": args.match, "average_rho": mean,
                          "groups": [{"group": c.group, "n": c.n, "rho": c.rho, "pairs": c.pairs} for c in result]},
                         allow_nan=True))
        return 0
    print(f"Spearman rho of {args.x} against {args.y}, matched on {', '.join(args.match)}")
    for c in result:
        print(f"  {c.group:24} n={c.n:<3} rho={c.rho:+.4f}")
    if len(result) > 1:
        print(f"  {'average':24}       rho={mean:+.4f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from db.export import export_rows, write_export

    store = _store(args)
    try:
        with store.read() as s:
            rows = export_rows(s, args.experiment)
    except LookupError as e:
        raise UserError(str(e).strip("'\"")) from None
    out = args.output
    if args.format == "parquet" and out is None:
        raise UserError("--format parquet: give an --output file (parquet is binary)")
    try:
        write_export(rows, args.format, out)
    except OSError as e:
        raise UserError(f"{out}: {e.strerror or e}") from None
    if out:
        print(f"{len(rows)} jobs written to {out}", file=sys.stderr)
    return 0


def cmd_spec(args: argparse.Namespace) -> int:
    """Print the fields of a job kind with their defaults and docs: the spec file reference."""
    from engine.specs import SPEC_CLASSES

    if args.kind not in SPEC_CLASSES:
        raise UserError(f"kind {args.kind!r}: one of {', '.join(SPEC_CLASSES)}")
    cls = SPEC_CLASSES[args.kind]
    if args.json:
        print(json.dumps(cls.model_json_schema(), indent=2))
        return 0
    for name, f in cls.model_fields.items():
        default = "required" if f.is_required() else repr(f.default)
        print(f"{name}: {default}")
        if f.description:
            print(f"    {f.description}")
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import run_app

    return run_app(home=args.home)


def cmd_worker(args: argparse.Namespace) -> int:
    from tui.cli_worker import run_worker_command

    return run_worker_command(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from tui.cli_demo import run_demo

    return run_demo(args)


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labdeck",
        description="Queue, watch and review LLM fine-tuning and evaluation jobs on this box's GPUs. "
        "With no command, opens the terminal app.",
    )
    p.add_argument("--home", default=None, help="labdeck's folder (default $LABDECK_HOME or ~/.local/share/labdeck)")
    p.set_defaults(func=cmd_tui)
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    # `--home` works before or after the command; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="labdeck's folder (as above)")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common])
        sp.set_defaults(func=func)
        return sp

    sp = add("submit", cmd_submit, "Queue the jobs of spec files (a job, a sweep or a pipeline); prints the new ids")
    sp.add_argument("files", nargs="+", metavar="FILE", help="YAML or JSON spec files, or the name of a shipped recipe (see `labdeck recipes`)")
    sp.add_argument("--variant", metavar="NAME", help="run a pipeline's variant, e.g. `tiny` (the recipe scaled down to local tiny models)")
    sp.add_argument("--json", action="store_true", help="print {\"ids\": [...]}")
    sp.add_argument("--no-worker", action="store_true", help="do not start a worker if none is alive")
    sp.add_argument("--var", action="append", metavar="NAME=VALUE", help="override a variable the file declares under vars:")

    sp = add("recipes", cmd_recipes, "List the shipped recipes (the seed experiments as pipelines) and their variants")
    sp.add_argument("--json", action="store_true")

    sp = add("ls", cmd_ls, "List jobs, newest first")
    sp.add_argument("-e", "--experiment", help="only this experiment")
    sp.add_argument("-s", "--status", action="append", metavar="STATUS", help=f"only these statuses ({', '.join(STATUSES)}); repeatable")
    sp.add_argument("-k", "--kind", action="append", metavar="KIND", help=f"only these kinds ({', '.join(KINDS)}); repeatable")
    sp.add_argument("-f", "--filter", metavar="TEXT", help="only jobs whose name, experiment, kind or status contains TEXT")
    sp.add_argument("-m", "--metric", metavar="NAME", help="add a column with the latest value of this metric")
    sp.add_argument("-n", "--limit", type=int, default=None, help="at most this many jobs")
    sp.add_argument("--json", action="store_true", help="print a JSON list")

    sp = add("show", cmd_show, "Show one job: spec, status and timestamps, GPUs, metrics, artifacts, failure")
    sp.add_argument("job", metavar="JOB")
    sp.add_argument("--json", action="store_true")

    sp = add("logs", cmd_logs, "Print a job's log (stdout and stderr)")
    sp.add_argument("job", metavar="JOB")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")

    sp = add("cancel", cmd_cancel, "Cancel jobs: queued ones at once, running ones are stopped by the worker")
    sp.add_argument("jobs", nargs="+", metavar="JOB")

    sp = add("retry", cmd_retry, "Queue a new attempt of finished jobs (failed, cancelled, interrupted, skipped), "
             "and of the jobs skipped because of them")
    sp.add_argument("jobs", nargs="+", metavar="JOB")
    sp.add_argument("--alone", action="store_true", help="retry only these jobs; their skipped dependents stay skipped")

    sp = add("rm", cmd_rm, "Delete finished jobs with their metrics, artifacts and run folders")
    sp.add_argument("jobs", nargs="*", metavar="JOB")
    sp.add_argument("-e", "--experiment", help="every job of this experiment (all must have finished)")
    sp.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a terminal)")

    sp = add("priority", cmd_priority, "Set the priority of queued jobs (higher runs first)")
    sp.add_argument("priority", type=int)
    sp.add_argument("jobs", nargs="+", metavar="JOB")

    for action, text in (("pause", "Start no new jobs until resumed"), ("resume", "Start jobs again"),
                         ("drain", "Let running jobs finish and start nothing new")):
        sp = add(action, cmd_queue, text)
        sp.set_defaults(action=action)

    sp = add("results", cmd_results, "Pivot an experiment's jobs: rows x columns of one metric, mean ± std over seeds")
    sp.add_argument("experiment")
    sp.add_argument("--rows", required=True, metavar="FIELD", help="a job field, sweep parameter or spec field (dotted)")
    sp.add_argument("--cols", default=None, metavar="FIELD")
    sp.add_argument("--metric", required=True, metavar="NAME")
    sp.add_argument("--reduce", default="last", choices=("last", "min", "max", "mean"), help="over a job's values of the metric")
    sp.add_argument("--format", default="table", choices=("table", "csv", "markdown", "latex", "json"))
    sp.add_argument("--where", action="append", metavar="FIELD=VALUE", help="only jobs with this value, e.g. stage=judge; repeatable")

    sp = add("correlate", cmd_correlate, "Spearman's rho between two per-job metrics, matched on fields, per group (e.g. CAR vs win rate per base model)")
    sp.add_argument("experiment")
    sp.add_argument("x", metavar="X_METRIC")
    sp.add_argument("y", metavar="Y_METRIC")
    sp.add_argument("--match", nargs="+", required=True, metavar="FIELD", help="fields that pair an X job with a Y job (e.g. teacher student)")
    sp.add_argument("--by", default=None, metavar="FIELD", help="one rho per value of this field, and their average")
    sp.add_argument("--x-where", action="append", metavar="FIELD=VALUE", help="only X jobs with this value (e.g. stage=compat)")
    sp.add_argument("--y-where", action="append", metavar="FIELD=VALUE", help="only Y jobs with this value (e.g. stage=judge)")
    sp.add_argument("--reduce", default="last", choices=("last", "min", "max", "mean"))
    sp.add_argument("--json", action="store_true")

    sp = add("export", cmd_export, "Export an experiment's jobs with their parameters and latest metrics")
    sp.add_argument("experiment")
    sp.add_argument("--format", default="csv", choices=("csv", "json", "parquet"))
    sp.add_argument("-o", "--output", default=None, help="file to write (default standard output)")

    sp = add("spec", cmd_spec, "Describe the fields of a job kind")
    sp.add_argument("kind", metavar="KIND")
    sp.add_argument("--json", action="store_true", help="print the JSON schema")

    sp = add("worker", cmd_worker, "Start, stop or inspect the worker daemon that runs jobs")
    from tui.cli_worker import add_worker_arguments

    add_worker_arguments(sp)

    sp = add("demo", cmd_demo, "Build tiny local models and run a CAR-style pipeline end to end (no network, no GPU)")
    sp.add_argument("--no-tui", action="store_true", help="run headless and print the final tables")
    sp.add_argument("--fresh", action="store_true", help="start the demo home from scratch")

    sp = add("tui", cmd_tui, "Open the terminal app (the same as no command)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"labdeck: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback, for known store errors
        from db.migrations import SchemaTooNew

        if isinstance(e, SchemaTooNew):
            print(f"labdeck: {e}", file=sys.stderr)
            return EXIT_USAGE
        raise


def _entry() -> Any:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
