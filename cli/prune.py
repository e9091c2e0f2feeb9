"""`labdeck prune EXP --keep-best N --metric M`: keep the best fine-tunes' weights, delete the others'.

Ranking and what is deleted are `db.prune`'s (the metric's final value; model folders and
checkpoints of the succeeded fine-tunes outside the best N; rows and metrics kept, artifacts marked
pruned). `--dry-run` prints the same plan and deletes nothing; without a terminal, `--yes` is needed.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.common import MAX_ID, AddCommand, UserError, bounded_int
from cli.experiments import human_bytes


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _lines(plan, home: str) -> list[str]:  # noqa: ANN001 - db.prune.PrunePlan
    better = "lower" if plan.mode == "min" else "higher"
    n = len(plan.keep) + len(plan.prune) + sum(1 for i in plan.skipped if i.value is not None)
    out = [f"{plan.experiment}: {n} finished fine-tune(s) ranked by {plan.metric} (final value, {better} is better); "
           f"keeping the best {plan.keep_best}"]
    for i in plan.keep:
        out.append(f"  keep   job {i.id:<6} {plan.metric} {_fmt(i.value):>9}  {i.name}")
    for i in plan.prune:
        where = ", ".join(p.removeprefix(home).lstrip("/") for p in i.paths)
        out.append(f"  prune  job {i.id:<6} {plan.metric} {_fmt(i.value):>9}  {i.name}  {human_bytes(i.bytes)}: {where}")
    for i in plan.skipped:
        out.append(f"  skip   job {i.id:<6} {plan.metric} {_fmt(i.value):>9}  {i.name}: {i.note}")
    if not plan.prune:
        out.append("nothing to prune")
    elif plan.done:
        out.append(f"freed {human_bytes(plan.bytes)} (rows and metrics kept; the artifacts say pruned)")
    else:
        out.append(f"would free {human_bytes(plan.bytes)}")
    return out


def cmd_prune(args: argparse.Namespace) -> int:
    from client import Client, ClientError

    client = Client(args.home)
    try:
        plan = client.prune(args.experiment, args.keep_best, args.metric, args.mode, dry_run=True)
        home = str(client.home)
        if args.dry_run or not plan.prune:
            _emit(args, plan, home)
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise UserError(f"prune: would delete the weights of {len(plan.prune)} fine-tune(s) "
                                f"({human_bytes(plan.bytes)}); add --yes to do it without a prompt, --dry-run to see them")
            print("\n".join(_lines(plan, home)))
            if input("Delete these weights? [y/N] ").strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        plan = client.prune(args.experiment, args.keep_best, args.metric, args.mode)
    except ClientError as e:
        raise UserError(str(e)) from None
    _emit(args, plan, home)
    return 0


def _emit(args: argparse.Namespace, plan, home: str) -> None:  # noqa: ANN001
    if args.json:
        print(json.dumps(plan.as_dict()))
    else:
        print("\n".join(_lines(plan, home)))


def register(add: AddCommand) -> None:
    sp = add("prune", cmd_prune, "Keep the best N finished fine-tunes of an experiment by a metric; delete the "
             "others' model folders and checkpoints (rows and metrics stay)")
    sp.add_argument("experiment", metavar="EXPERIMENT")
    sp.add_argument("--keep-best", "-n", type=bounded_int(1, MAX_ID), required=True, metavar="N",
                    help="how many fine-tunes keep their weights")
    sp.add_argument("--metric", "-m", required=True, metavar="NAME", help="rank by this metric's final value")
    sp.add_argument("--mode", choices=("min", "max"), help="min: lower is better, max: higher is better "
                    "(inferred for names such as loss, ppl, ece / accuracy, win_rate, auroc)")
    sp.add_argument("--dry-run", action="store_true", help="print what would go and the bytes freed; delete nothing")
    sp.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a terminal)")
    sp.add_argument("--json", action="store_true", help="print the plan: keep, prune, skipped, bytes, dry_run")
