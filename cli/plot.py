"""`labdeck plot`: an experiment's results as a PNG, PDF or SVG figure for a paper.

Fields and filters are those of `labdeck results` (a job column, a sweep or matrix parameter, a
dotted spec field; `--where FIELD=VALUE`), and the numbers are the same: a metric reduced per job
(`--reduce`), then mean and sample std over the jobs that share a point (the seeds). Kinds:

* `line` (default): the metric against a numeric swept field (`--x`), one line per `--by` value,
  a ±1 std band over seeds (ExPO's alpha sweep, a learning-rate sweep);
* `bars`: the pivot as grouped bars (`--x` groups, `--by` bars, ±1 std error bars);
* `heatmap`: the pivot as a heatmap (`--x` rows, `--by` columns);
* `reliability`: calibration jobs' reliability diagram from their scored records (`--metric` is the
  confidence field, `confidence` or `confidence_ts`; one curve per `--by` value, pooled over jobs);
* `scatter`: the pairs behind `labdeck correlate` (`--x` is then the X metric, `--match` pairs jobs).

matplotlib is an optional extra (`pip install 'labdeck[plots]'`); without it the command says so in
one line and exits 2. The drawing lives in `cli/figures.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from cli.common import AddCommand, UserError, home_path, reader

KINDS = ("line", "bars", "heatmap", "reliability", "scatter")


def _need_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("plot needs matplotlib: pip install 'labdeck[plots]'") from None


def _output(path: str) -> Path:
    from cli.figures import FORMATS

    out = Path(path).expanduser()
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"-o {path}: the file must end in {', '.join(FORMATS)}")
    if not out.parent.is_dir():
        raise UserError(f"-o {path}: folder {out.parent} does not exist")
    return out.with_suffix(out.suffix.lower())


def _rows(args: argparse.Namespace, metric: str, conditions) -> list:  # noqa: ANN001
    from db.reads import experiment_metric
    from db.results import where

    try:
        with reader(args) as s:
            rows = experiment_metric(s, args.experiment, metric, args.reduce)
        return where(rows, conditions or ())
    except LookupError as e:
        raise UserError(str(e).strip("'\"")) from None
    except ValueError as e:
        raise UserError(str(e)) from None


def _number(v: object, field: str, job: int) -> float:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"--x {field}: job {job} has {v!r}, not a number; use --kind bars for a categorical field") from None
    return x


def line_series(rows, x: str, by: str | None) -> dict[str, list[tuple[float, float, float | None, int]]]:  # noqa: ANN001
    """{group: [(x, mean, std, n)]}: jobs pooled per (group, x), i.e. over seeds and unlisted fields."""
    from db.results import _label, _sort_key, field_value

    pooled: dict[str, dict[float, list[float]]] = {}
    for r in rows:
        if r.value is None or math.isnan(r.value):
            continue
        xv = field_value(r, x)
        if xv is None:
            continue
        group = _label(field_value(r, by)) if by else "all"
        pooled.setdefault(group, {}).setdefault(_number(xv, x, r.id), []).append(float(r.value))
    out = {}
    for group in sorted(pooled, key=_sort_key):
        pts = sorted(pooled[group].items())
        out[group] = [(xv, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, len(v)) for xv, v in pts]
    return out


def _reliability_curves(home: Path, rows, field: str, by: str | None, bins: int) -> dict:  # noqa: ANN001
    import numpy as np

    from db.results import _label, field_value
    from engine.metrics.calibration import ece, reliability_bins

    pooled: dict[str, tuple[list[float], list[int]]] = {}
    for r in rows:
        records = home / "runs" / str(r.id) / "outputs" / "records.jsonl"
        if not records.exists():
            continue
        group = _label(field_value(r, by)) if by else "all"
        conf, labels = pooled.setdefault(group, ([], []))
        with open(records, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                p, y = rec.get(field), rec.get("confidence_label")
                if isinstance(p, (int, float)) and y in (0, 1) and math.isfinite(p):
                    conf.append(float(p))
                    labels.append(int(y))
    curves = {}
    for group, (conf, labels) in sorted(pooled.items()):
        if not conf:
            continue
        rb = reliability_bins(conf, labels, bins=bins, mode="one_sided", drop_conf_one=False)
        keep = rb.counts > 0
        curves[group] = (rb.mean_confidence[keep].tolist(), rb.accuracy[keep].tolist(),
                         rb.counts[keep].tolist(), ece(np.asarray(conf), labels, bins=bins, mode="one_sided",
                                                       drop_conf_one=False))
    return curves


def cmd_plot(args: argparse.Namespace) -> int:  # noqa: C901 - one branch per figure kind
    _need_matplotlib()
    from cli import figures

    out = _output(args.output)
    title = args.title
    kind = args.kind
    if kind in ("line", "bars", "heatmap", "scatter") and not args.x:
        raise UserError(f"--kind {kind}: give --x (a field{', the X metric' if kind == 'scatter' else ''})")
    if kind == "scatter":
        from db.results import correlate

        if not args.match:
            raise UserError("--kind scatter: give --match FIELD... to pair X and Y jobs (as labdeck correlate)")
        xr = _rows(args, args.x, args.x_where)
        yr = _rows(args, args.metric, (args.where or []) + (args.y_where or []))
        result = correlate(xr, yr, args.match, args.by)
        if not result:
            raise UserError(f"experiment {args.experiment!r}: no job pairs with both {args.x!r} and {args.metric!r} "
                            f"matched on {', '.join(args.match)}")
        figures.scatter({c.group: c.pairs for c in result}, {c.group: c.rho for c in result}, out,
                        x_label=args.x_label or args.x, y_label=args.y_label or args.metric, by=args.by, title=title)
        return _done(out)
    if kind == "reliability":
        rows = _rows(args, args.metric, args.where)  # the metric as a job filter is not needed: any job
        curves = _reliability_curves(home_path(args), rows, args.metric, args.by, args.bins)
        if not curves:
            raise UserError(f"experiment {args.experiment!r}: no scored records with {args.metric!r} and "
                            "confidence_label (a score job with the confidence scorer)")
        figures.reliability(curves, out, x_label=args.x_label or f"{args.metric} (mean per bin)", title=title, by=args.by)
        return _done(out)
    rows = _rows(args, args.metric, args.where)
    if kind == "line":
        series = line_series(rows, args.x, args.by)
        if not series:
            raise UserError(f"experiment {args.experiment!r}: no job has both {args.metric!r} and field {args.x!r}")
        figures.line(series, out, x_label=args.x_label or args.x, y_label=args.y_label or args.metric, by=args.by,
                     title=title, log_x=args.log_x)
        return _done(out)
    from db.results import pivot

    p = pivot(rows, args.experiment, args.metric, args.x, args.by, args.reduce)
    if not p.cells:
        raise UserError(f"experiment {args.experiment!r}: no job reported metric {args.metric!r}")
    if kind == "bars":
        figures.bars(p.row_labels, p.col_labels, p.cells, out, x_label=args.x_label or args.x,
                     y_label=args.y_label or args.metric, by=args.by, title=title)
    else:
        figures.heatmap(p.row_labels, p.col_labels, p.cells, out, x_label=args.x_label or (args.by or ""),
                        y_label=args.y_label or args.x, metric=args.metric, title=title)
    return _done(out)


def _done(out: Path) -> int:
    print(f"wrote {out}", file=sys.stderr)
    return 0


def register(add: AddCommand) -> None:
    sp = add("plot", cmd_plot, "Draw an experiment's results as a PNG, PDF or SVG figure (needs labdeck[plots])")
    sp.add_argument("experiment")
    sp.add_argument("--metric", required=True, metavar="NAME",
                    help="the metric on the y axis (reliability: the records' confidence field, e.g. confidence)")
    sp.add_argument("--x", default=None, metavar="FIELD", help="the swept field on the x axis (scatter: the X metric)")
    sp.add_argument("--by", default=None, metavar="FIELD", help="one line, bar colour or heatmap column per value")
    sp.add_argument("--kind", default="line", choices=KINDS)
    sp.add_argument("--where", action="append", metavar="FIELD=VALUE", help="only jobs with this value; repeatable")
    sp.add_argument("--reduce", default="last", choices=("last", "min", "max", "mean"), help="over a job's values")
    sp.add_argument("--match", nargs="+", metavar="FIELD", help="scatter: fields that pair an X job with a Y job")
    sp.add_argument("--x-where", action="append", metavar="FIELD=VALUE", help="scatter: only X jobs with this value")
    sp.add_argument("--y-where", action="append", metavar="FIELD=VALUE", help="scatter: only Y jobs with this value")
    sp.add_argument("--bins", type=int, default=10, help="reliability: equal-width confidence bins")
    sp.add_argument("--log-x", action="store_true", help="line: logarithmic x axis (learning rates)")
    sp.add_argument("--title", default=None)
    sp.add_argument("--x-label", default=None)
    sp.add_argument("--y-label", default=None)
    sp.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.png, FILE.pdf or FILE.svg")
