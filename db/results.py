"""The results pivot: jobs of an experiment arranged by two fields, one metric, mean ± std over seeds.

This is the table papers are made of (rows: base models, columns: teachers, cells: win rate).
Jobs that share a (row, column) cell and differ only in seed or other swept fields are pooled:
the cell holds their mean, sample standard deviation and count.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from db.rows import ResultRow

JOB_FIELDS = ("id", "name", "kind", "status")


def field_value(row: ResultRow, name: str) -> Any:
    """A job's value for a pivot field: a job column, a sweep/matrix parameter, or a spec field.

    Several fields joined by commas (`model,method`) make one composite label, 'llama-2-7b · probe'
    (a heatmap's columns over two axes, as seed 003's model x method).
    """
    if "," in name:
        return " · ".join(_label(field_value(row, part.strip())) for part in name.split(",") if part.strip())
    if name in JOB_FIELDS:
        return getattr(row, name)
    if name in row.params:
        return row.params[name]
    if name.startswith("params."):
        return row.params.get(name[7:])
    node: Any = row.spec
    for part in name.removeprefix("spec.").split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    if isinstance(node, dict) and "path" in node:  # a model or dataset reference: show its path
        return node["path"]
    return node


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float | None  # None with a single value
    n: int

    def text(self, digits: int = 4) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {self.std:.2g}"


@dataclass(frozen=True)
class Pivot:
    experiment: str
    metric: str
    reduce: str
    rows_field: str
    cols_field: str
    row_labels: list[str]
    col_labels: list[str]
    cells: dict[tuple[str, str], Cell]
    missing: int  # jobs without the metric

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "metric": self.metric, "reduce": self.reduce,
            "rows": self.rows_field, "cols": self.cols_field,
            "row_labels": self.row_labels, "col_labels": self.col_labels,
            "cells": [
                {"row": r, "col": c, "mean": cell.mean, "std": cell.std, "n": cell.n}
                for (r, c), cell in self.cells.items()
            ],
            "missing": self.missing,
        }


def _label(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def where(rows: Sequence[ResultRow], conditions: Sequence[str]) -> list[ResultRow]:
    """Keep the jobs whose fields equal the given values: `stage=judge`, `teacher=teacher-a`."""
    pairs = []
    for cond in conditions:
        name, sep, value = cond.partition("=")
        if not sep or not name:
            raise ValueError(f"--where {cond!r}: write FIELD=VALUE")
        pairs.append((name, value))
    return [r for r in rows if all(_label(field_value(r, n)) == v for n, v in pairs)]


def pivot(
    rows: Sequence[ResultRow], experiment: str, metric: str, rows_field: str, cols_field: str | None, reduce: str = "last"
) -> Pivot:
    groups: dict[tuple[str, str], list[float]] = {}
    missing = 0
    for r in rows:
        if r.value is None or (isinstance(r.value, float) and math.isnan(r.value)):
            missing += 1
            continue
        key = (_label(field_value(r, rows_field)), _label(field_value(r, cols_field)) if cols_field else metric)
        groups.setdefault(key, []).append(float(r.value))
    cells = {
        k: Cell(statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, len(v)) for k, v in groups.items()
    }
    row_labels = sorted({k[0] for k in cells}, key=_sort_key)
    col_labels = sorted({k[1] for k in cells}, key=_sort_key)
    return Pivot(experiment, metric, reduce, rows_field, cols_field or "", row_labels, col_labels, cells, missing)


@dataclass(frozen=True)
class Correlation:
    """Spearman's ρ between two per-job metrics within one group (docs/science.md §4.2)."""

    group: str
    n: int
    rho: float
    pairs: list[tuple[str, float, float]]  # (match label, x, y)


def correlate(
    x_rows: Sequence[ResultRow], y_rows: Sequence[ResultRow], match: Sequence[str], by: str | None = None
) -> list[Correlation]:
    """Pair jobs of two metrics by the `match` fields (e.g. teacher), then ρ per `by` group (e.g. base model).

    In the CAR paper, x is a metric of a teacher's data under a base model (CAR, reward, IFD) and y
    the performance of that base model fine-tuned on it; ρ is computed per base model and averaged.
    ρ uses average ranks for ties (as `scipy.stats.spearmanr`) on raw values, never sign-flipped.
    """

    def key(r: ResultRow) -> tuple[str, str]:
        group = _label(field_value(r, by)) if by else "all"
        return group, " ".join(_label(field_value(r, f)) for f in match)

    def index(rows: Sequence[ResultRow]) -> dict[tuple[str, str], list[float]]:
        out: dict[tuple[str, str], list[float]] = {}
        for r in rows:
            if r.value is not None and not math.isnan(r.value):
                out.setdefault(key(r), []).append(float(r.value))
        return out

    xs, ys = index(x_rows), index(y_rows)
    groups: dict[str, list[tuple[str, float, float]]] = {}
    for k in sorted(set(xs) & set(ys)):
        groups.setdefault(k[0], []).append((k[1], statistics.fmean(xs[k]), statistics.fmean(ys[k])))
    out = []
    for group, pairs in sorted(groups.items()):
        if len(pairs) < 2:
            rho = float("nan")
        else:
            rho = spearman([p[1] for p in pairs], [p[2] for p in pairs])
        out.append(Correlation(group, len(pairs), rho, pairs))
    return out


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ with average ranks for ties: Pearson's r of the ranks; NaN when a side is constant.

    Written out (a dozen lines) so the CLI's `correlate` and the demo need no scipy on the
    interactive side; tests check it against `scipy.stats.spearmanr`.
    """
    rx, ry = _average_ranks(x), _average_ranks(y)
    try:
        return statistics.correlation(rx, ry)
    except statistics.StatisticsError:
        return float("nan")
