"""`labdeck submit`, `recipes`, `ls`, `show`, `logs`, `cancel`, `retry`, `rm`, `priority`, the queue and `spec`.

Everything a script does to jobs. Reads and writes go through the store (`db.queries`,
`db.queue`, `db.removal`); specs are expanded by `engine.specfile` (no torch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from cli.common import KINDS, STATUSES, AddCommand, UserError, fmt_duration
from cli.common import job_ids as _job_ids
from cli.common import open_home_store as _store
from cli.common import require_jobs as _require_jobs


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
        from cli.worker import ensure_worker

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
                "" if frac is None else f"{frac:4.0%}", fmt_duration(r.elapsed(now)),
                fmt_duration(r.eta_s) if r.status == "running" else ""]
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


def register(add: AddCommand) -> None:
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

    sp = add("spec", cmd_spec, "Describe the fields of a job kind")
    sp.add_argument("kind", metavar="KIND")
    sp.add_argument("--json", action="store_true", help="print the JSON schema")
