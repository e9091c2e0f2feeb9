"""`labdeck submit`, `recipes`, `ls`, `show`, `logs`, `cancel`, `retry`, `rm`, `priority`, the queue and `spec`.

Everything a script does to jobs. Reads go through `db.reads` (plain sqlite3, read-only); writes
through the client layer (`client.Client`), the same one the app uses, so a spec is validated and
a request refused in one place.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli.common import KINDS, MAX_ID, STATUSES, AddCommand, UserError, bounded_int, fmt_duration, reader
from cli.common import job_ids as _job_ids

PRIORITY_RANGE = (-1000, 1000)  # client.PRIORITY_RANGE; repeated so --help imports nothing


def _client(args: argparse.Namespace):  # noqa: ANN202 - client.Client, imported lazily
    from client import Client

    return Client(args.home)


@contextmanager
def _refusals() -> Iterator[None]:
    """A refusal of the client layer is the CLI's one-line error."""
    from client import ClientError

    try:
        yield
    except ClientError as e:
        raise UserError(str(e)) from None


def _emit(args: argparse.Namespace, data: object, lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data))
    else:
        for line in lines:
            print(line)


def cmd_submit(args: argparse.Namespace) -> int:
    from client import Client, parse_vars, plan

    with _refusals():
        expansions = Client.expand(args.files, parse_vars(args.var or ()), args.variant)
        if args.dry_run:  # expanded and validated, nothing stored, no home created
            jobs = plan(expansions)
            _emit(args, {"jobs": [j.as_dict() for j in jobs]},
                  [f"{j.index:4}  {j.experiment} / {j.name}  [{j.kind}]"
                   + (f"  after {', '.join(j.after)}" if j.after else "") for j in jobs]
                  + [f"{len(jobs)} job(s) would be queued (dry run: nothing stored)"])
            return 0
        client = _client(args)
        ids = client.enqueue(expansions, args.files[0], Client.descriptions(args.files))
    _emit(args, {"ids": ids}, [str(i) for i in ids])
    if not args.no_worker:
        ok, message = client.ensure_worker()
        if not ok and sys.stderr.isatty():
            print(f"labdeck: {message}", file=sys.stderr)
    return 0


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
    from db.reads import any_archived, latest_metrics, list_jobs, worker_state

    for st in args.status or ():
        if st not in STATUSES:
            raise UserError(f"--status: {st!r} is not one of {', '.join(STATUSES)}")
    for k in args.kind or ():
        if k not in KINDS:
            raise UserError(f"--kind: {k!r} is not one of {', '.join(KINDS)}")
    with reader(args) as s:
        rows = list_jobs(s, experiment=args.experiment, statuses=args.status or (), kinds=args.kind or (),
                         text=args.filter, limit=args.limit, hide_archived=not args.all)
        metrics = latest_metrics(s, [r.id for r in rows]) if args.metric else {}
        worker = worker_state(s)
        hidden = not args.all and not args.experiment and any_archived(s)
    if args.json:
        out = [r.as_dict() | ({"metric": metrics.get(r.id, {}).get(args.metric)} if args.metric else {}) for r in rows]
        print(json.dumps(out, indent=None))
        return 0
    from cli.text import table

    headers = ["id", "experiment", "kind", "name", "status", "gpus", "progress", "elapsed", "eta"]
    if args.metric:
        headers.append(args.metric)
    now = time.time()
    lines = []
    for r in rows:
        frac = r.fraction
        line = [str(r.id), r.experiment, r.kind, r.name, r.shown_status, r.assigned_gpus or (str(r.gpus_requested) if r.gpus_requested else "-"),
                "" if frac is None else f"{frac:4.0%}", fmt_duration(r.elapsed(now)),
                fmt_duration(r.eta_s) if r.status == "running" else ""]
        if args.metric:
            v = metrics.get(r.id, {}).get(args.metric)
            line.append("" if v is None else f"{v:.4g}")
        lines.append(line)
    print(table(headers, lines, right=(0, 6, 7, 8)))
    state = "online" if worker.online else "offline"
    print(f"worker {state} · queue {worker.queue_state} · {len(rows)} jobs"
          + (" · archived experiments hidden (-a shows them)" if hidden else ""))
    return 0


def _detail(args: argparse.Namespace, job: str | int):  # noqa: ANN202 - db.rows.JobDetail
    """One job's detail, or a one-line error for a bad or unknown id."""
    from db.reads import job_detail
    from db.schema import UnknownJob

    (job_id,) = _job_ids([str(job)])
    try:
        with reader(args) as s:
            return job_detail(s, job_id)
    except UnknownJob as e:
        raise UserError(str(e)) from None


def _series(args: argparse.Namespace, job_id: int) -> dict[str, list[list[float]]]:
    """Every metric reported with a step, as [[step, value], ...]: the curves the app charts."""
    from db.reads import metric_names, metric_series

    with reader(args) as s:
        curves = {name: metric_series(s, job_id, name) for name in metric_names(s, job_id)}
    return {name: [[step, value] for step, value in pts] for name, pts in curves.items() if pts}


def cmd_show(args: argparse.Namespace) -> int:
    d = _detail(args, args.job)
    if args.json:
        data = d.as_dict()
        data["series"] = _series(args, d.row.id)
        print(json.dumps(data, indent=2))
        return 0
    import yaml

    from cli.text import safe

    out: list[str] = []
    r = d.row
    out.append(f"job {r.id}  {r.experiment} / {r.name}  [{r.kind}]  {r.status}")
    for label, t in (("queued", r.queued_at), ("started", r.started_at), ("finished", r.finished_at)):
        if t:
            out.append(f"  {label:9} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))}")
    if r.assigned_gpus:
        out.append(f"  gpus      {r.assigned_gpus}")
    if r.slurm_job_id:
        where = f" on {r.slurm_nodes}" if r.slurm_nodes else ""
        why = f" ({r.slurm_reason})" if r.slurm_reason else ""
        out.append(f"  slurm     job {r.slurm_job_id}: {r.slurm_state or '?'}{why}{where}")
    if d.depends_on:
        out.append(f"  after     {', '.join(map(str, d.depends_on))}")
    if r.failure_reason:
        out.append(f"  reason    {r.failure_reason}: {d.failure_detail}")
    if d.run_dir:
        out.append(f"  log       {d.run_dir}/log.txt")
    if r.progress_done is not None:
        total = f"/{r.progress_total:g}" if r.progress_total else ""
        eta = f", ETA {fmt_duration(r.eta_s)}" if r.eta_s and r.status == "running" else ""
        out.append(f"  progress  {r.progress_done:g}{total}{eta}")
    if d.metrics:
        out.append("metrics:")
        out += [f"  {k:24} {v:.6g}" for k, v in sorted(d.metrics.items())]
    curves = _series(args, r.id)
    if curves:
        out.append("curves:")
        out += [f"  {k:24} {len(pts)} points, step {pts[0][0]}..{pts[-1][0]}: {pts[0][1]:.4g} -> {pts[-1][1]:.4g}"
                for k, pts in sorted(curves.items())]
    if d.artifacts:
        out.append("artifacts:")
        out += [f"  {a.kind:10} {a.path}" + ("  (pruned: weights deleted by labdeck prune)" if "pruned_at" in a.meta else "")
                for a in d.artifacts]
    out.append("spec:")
    out.append(yaml.safe_dump(d.spec, sort_keys=False).rstrip())
    if d.log_tail and r.status in ("failed", "interrupted"):
        out.append("last log lines:")
        out.append(d.log_tail)
    print(safe("\n".join(out)))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    d = _detail(args, args.job)
    job_id = d.row.id
    path = Path(d.run_dir) / "log.txt" if d.run_dir else None
    if path is None or not path.exists():
        if not args.follow:
            print(f"job {job_id} has no log yet ({d.row.status})", file=sys.stderr)
            return 0
    import codecs

    from cli.text import is_terminal, safe_log

    out = sys.stdout
    on_tty = is_terminal(out)  # a pipe or a file gets the log's bytes as they are
    raw = getattr(out, "buffer", None) if not on_tty else None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character split across reads stays whole
    offset = 0
    while True:
        if path is None:
            d = _detail(args, job_id)
            path = Path(d.run_dir) / "log.txt" if d.run_dir else None
        if path is not None and path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            offset += len(data)
            if raw is not None:
                out.flush()
                raw.write(data)
                raw.flush()
            else:
                text = decoder.decode(data)
                out.write(safe_log(text) if on_tty else text)
                out.flush()
        if not args.follow:
            return 0
        status = _detail(args, job_id).row.status
        if status not in ("queued", "running"):
            if path is not None and path.exists() and path.stat().st_size > offset:
                continue
            return 0
        time.sleep(0.5)


# ----------------------------------------------------------------------------- cancel / retry / priority / queue


def cmd_cancel(args: argparse.Namespace) -> int:
    from client import CANCEL_WORDS

    ids = _job_ids(args.jobs)
    with _refusals():
        results = _client(args).cancel(ids)
    _emit(args, [{"id": i, "status": st} for i, st in results],
          [f"{i}: {CANCEL_WORDS.get(st, f'already {st}')}" for i, st in results])
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    ids = _job_ids(args.jobs)
    with _refusals():
        mappings = _client(args).retry(ids, alone=args.alone)
    lines = []
    for old, mapping in zip(ids, mappings, strict=True):
        rest = [f"{o} -> {n}" for o, n in mapping.items() if o != old]
        lines.append(f"{old} -> {mapping[old]}" + (f" (skipped dependents: {', '.join(rest)})" if rest else ""))
    _emit(args, [{"id": old, "new": m[old], "dependents": {str(o): n for o, n in m.items() if o != old}}
                 for old, m in zip(ids, mappings, strict=True)], lines)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete finished jobs (or a whole experiment's) with their rows and run folders."""
    from db.reads import list_jobs
    from db.removal import folder_bytes, run_folders

    ids = _job_ids(args.jobs)
    if args.experiment and not ids:
        return _rm_experiment(args, args.experiment)
    if args.experiment:
        with reader(args) as s:
            found = [j.id for j in list_jobs(s, experiment=args.experiment)]
        if not found:
            raise UserError(f"experiment {args.experiment!r}: no such experiment, or no jobs in it")
        ids += found
    if not ids:
        raise UserError("rm: name jobs, or an experiment with -e")
    client = _client(args)
    with _refusals():
        folders = run_folders(client.existing_store(), ids)
    what = f"{len(folders)} job(s) and their run folders ({folder_bytes(folders) / 1e6:.1f} MB)"
    if not _confirm_delete(args, what):
        return 1
    with _refusals():
        deleted = client.rm(ids)
    _emit(args, {"deleted": deleted}, [f"deleted {what}"])
    return 0


def _confirm_delete(args: argparse.Namespace, what: str) -> bool:
    """`--yes`, or a person at a terminal who answers y; without a terminal, a one-line refusal."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UserError(f"rm: would delete {what}; add --yes to do it without a prompt")
    if input(f"Delete {what}? [y/N] ").strip().lower() in ("y", "yes"):
        return True
    print("nothing deleted")
    return False


def _rm_experiment(args: argparse.Namespace, name: str) -> int:
    """`rm -e EXP`: the experiment with every job, refused (naming them) while one is queued or running."""
    client = _client(args)
    with _refusals():
        plan, size = client.deletion_plan(name)
    if plan.refusal:
        raise UserError(plan.refusal)
    what = f"experiment {name} with {len(plan.job_ids)} job(s) and their run folders ({size / 1e6:.1f} MB)"
    if not _confirm_delete(args, what):
        return 1
    with _refusals():
        deleted = client.delete_experiment(name)
    _emit(args, {"deleted": deleted, "experiment": name, "bytes": size}, [f"deleted {what}"])
    return 0


def cmd_priority(args: argparse.Namespace) -> int:
    ids = _job_ids(args.jobs)
    with _refusals():
        pairs = _client(args).priority(ids, value=args.priority)
    _emit(args, [{"id": i, "priority": p} for i, p in pairs], [])
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    with _refusals():
        _client(args).set_queue_state({"pause": "paused", "resume": "running", "drain": "draining"}[args.action])
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
    sp.add_argument("files", nargs="+", metavar="FILE",
                    help="YAML or JSON spec files, or the name of a shipped recipe (see `labdeck recipes`); a name "
                    "without '/' or a .yaml/.yml/.json suffix is the recipe even if a file of that name is here: "
                    "write ./NAME for the file")
    sp.add_argument("--variant", metavar="NAME", help="run a pipeline's variant, e.g. `tiny` (the recipe scaled down to local tiny models)")
    sp.add_argument("--json", action="store_true", help="print {\"ids\": [...]}")
    sp.add_argument("--no-worker", action="store_true", help="do not start a worker if none is alive (also: LABDECK_NO_AUTOSTART=1)")
    sp.add_argument("--dry-run", action="store_true", help="print the jobs it would queue (names, kinds, dependencies); store nothing")
    sp.add_argument("--var", action="append", metavar="NAME=VALUE", help="override a variable the file declares under vars:")

    sp = add("recipes", cmd_recipes, "List the shipped recipes (the seed experiments as pipelines) and their variants")
    sp.add_argument("--json", action="store_true")

    sp = add("ls", cmd_ls, "List jobs, newest first")
    sp.add_argument("-e", "--experiment", help="only this experiment")
    sp.add_argument("-s", "--status", action="append", metavar="STATUS", help=f"only these statuses ({', '.join(STATUSES)}); repeatable")
    sp.add_argument("-k", "--kind", action="append", metavar="KIND", help=f"only these kinds ({', '.join(KINDS)}); repeatable")
    sp.add_argument("-f", "--filter", metavar="TEXT", help="only jobs whose name, experiment, kind or status contains TEXT")
    sp.add_argument("-m", "--metric", metavar="NAME", help="add a column with the latest value of this metric")
    sp.add_argument("-n", "--limit", type=bounded_int(1, MAX_ID), default=None, help="at most this many jobs")
    sp.add_argument("-a", "--all", action="store_true", help="also the jobs of archived experiments (-e shows them anyway)")
    sp.add_argument("--json", action="store_true", help="print a JSON list")

    sp = add("show", cmd_show, "Show one job: spec, status and timestamps, GPUs, metrics, artifacts, failure")
    sp.add_argument("job", metavar="JOB")
    sp.add_argument("--json", action="store_true")

    sp = add("logs", cmd_logs, "Print a job's log (stdout and stderr)")
    sp.add_argument("job", metavar="JOB")
    sp.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")

    sp = add("cancel", cmd_cancel, "Cancel jobs: queued ones at once, running ones are stopped by the worker")
    sp.add_argument("jobs", nargs="+", metavar="JOB")
    sp.add_argument("--json", action="store_true", help="print [{\"id\": ..., \"status\": STATUS}] (running: the worker stops it)")

    sp = add("retry", cmd_retry, "Queue a new attempt of finished jobs (failed, cancelled, interrupted, skipped), "
             "and of the jobs skipped because of them")
    sp.add_argument("jobs", nargs="+", metavar="JOB")
    sp.add_argument("--alone", action="store_true", help="retry only these jobs; their skipped dependents stay skipped")
    sp.add_argument("--json", action="store_true", help="print [{\"id\": OLD, \"new\": NEW, \"dependents\": {...}}]")

    sp = add("rm", cmd_rm, "Delete finished jobs with their metrics, artifacts and run folders")
    sp.add_argument("jobs", nargs="*", metavar="JOB")
    sp.add_argument("-e", "--experiment", help="the experiment with every job of it (refused while one is queued or running)")
    sp.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a terminal)")
    sp.add_argument("--json", action="store_true", help="print {\"deleted\": [ids]}")

    sp = add("priority", cmd_priority, "Set the priority of queued jobs (higher runs first)")
    sp.add_argument("priority", type=bounded_int(*PRIORITY_RANGE), help="from -1000 to 1000")
    sp.add_argument("jobs", nargs="+", metavar="JOB")
    sp.add_argument("--json", action="store_true", help="print [{\"id\": ..., \"priority\": ...}]")

    for action, text in (("pause", "Start no new jobs until resumed"), ("resume", "Start jobs again"),
                         ("drain", "Let running jobs finish and start nothing new")):
        sp = add(action, cmd_queue, text)
        sp.set_defaults(action=action)

    sp = add("spec", cmd_spec, "Describe the fields of a job kind")
    sp.add_argument("kind", metavar="KIND")
    sp.add_argument("--json", action="store_true", help="print the JSON schema")
