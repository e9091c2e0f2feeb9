"""`labdeck results`, `correlate` and `export`: an experiment's jobs as the tables papers are made of.

The pivot and correlation logic lives in `db.results`, the text renderings in `db.formats` (the
app's results view uses the same ones); this module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.common import AddCommand, UserError, reader


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
    from db.reads import experiment_metric
    from db.results import pivot, where

    try:
        with reader(args) as s:
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
    from db.formats import RENDERERS

    sys.stdout.write(RENDERERS[args.format](p))
    return 0


def cmd_correlate(args: argparse.Namespace) -> int:
    import math

    from db.reads import experiment_metric
    from db.results import correlate, where

    try:
        with reader(args) as s:
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

    try:
        with reader(args) as s:
            rows = export_rows(s, args.experiment)
    except LookupError as e:
        raise UserError(str(e).strip("'\"")) from None
    out = args.output
    if args.format == "parquet" and out is None:
        raise UserError("--format parquet: give an --output file (parquet is binary)")
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401 - the interactive side installs without it
        except ImportError:
            raise UserError("--format parquet: needs pyarrow, which this install lacks: pip install 'labdeck[analysis]'") from None
    try:
        write_export(rows, args.format, out)
    except OSError as e:
        raise UserError(f"{out}: {e.strerror or e}") from None
    if out:
        print(f"{len(rows)} jobs written to {out}", file=sys.stderr)
    return 0


def register(add: AddCommand) -> None:
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
