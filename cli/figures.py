"""Publication figures with matplotlib: the drawing half of `labdeck plot`, on plain numbers.

Each function takes data already pulled out of the store (`cli/plot.py` does that) and writes one
file; the format follows the suffix (.png, .pdf, .svg). Defaults aim at a paper column: 3.5 x 2.6
inches, 9-point type, no top/right spines, a colour-blind-safe palette (Okabe-Ito), 300 dpi for
PNG, fonts kept as text in SVG and embedded as TrueType in PDF (editable in Illustrator/Inkscape).

The file is written to a temporary name next to the target and renamed, so a failure never leaves
half a figure behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMATS = (".png", ".pdf", ".svg")
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
STYLE = {
    "figure.figsize": (3.5, 2.6), "figure.dpi": 100, "savefig.dpi": 300, "savefig.bbox": "tight",
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.5, "lines.markersize": 4,
    "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
}


def _pyplot():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    plt.rcParams.update(STYLE)
    plt.rcParams["axes.prop_cycle"] = cycler(color=OKABE_ITO)
    return plt


def _save(fig: Any, out: Path) -> None:
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    try:
        fig.savefig(tmp, format=out.suffix[1:])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        import matplotlib.pyplot as plt

        plt.close(fig)


def _legend(ax: Any, title: str | None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 1 or (labels and title):
        ax.legend(title=title, loc="best")


def line(series: dict[str, list[tuple[float, float, float | None, int]]], out: Path, *, x_label: str, y_label: str,
         by: str | None, title: str | None = None, log_x: bool = False) -> None:
    """A metric against a swept field: one line per group, mean with a ±1 std band over seeds.

    `series`: {group: [(x, mean, std or None, n), ...]} sorted by x.
    """
    plt = _pyplot()
    fig, ax = plt.subplots()
    for label, pts in series.items():
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        (ln,) = ax.plot(xs, ys, marker="o", label=label)
        lo = [p[1] - (p[2] or 0.0) for p in pts]
        hi = [p[1] + (p[2] or 0.0) for p in pts]
        if any(p[2] for p in pts):
            ax.fill_between(xs, lo, hi, color=ln.get_color(), alpha=0.2, linewidth=0)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    _legend(ax, by)
    _save(fig, out)


def bars(row_labels: Sequence[str], col_labels: Sequence[str], cells: dict[tuple[str, str], Any], out: Path, *,
         x_label: str, y_label: str, by: str | None, title: str | None = None) -> None:
    """Grouped bars of a pivot: one group per row label, one bar per column label, ±1 std error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(row_labels) + 1.5), 2.6))
    k = max(1, len(col_labels))
    width = 0.8 / k
    for j, c in enumerate(col_labels):
        xs, ys, errs = [], [], []
        for i, r in enumerate(row_labels):
            cell = cells.get((r, c))
            if cell is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(cell.mean)
            errs.append(cell.std or 0.0)
        ax.bar(xs, ys, width=width * 0.95, yerr=errs if any(errs) else None, capsize=2, label=c,
               error_kw={"linewidth": 0.8})
    ax.set_xticks(range(len(row_labels)), row_labels, rotation=30 if max(map(len, row_labels), default=0) > 8 else 0,
                  ha="right" if max(map(len, row_labels), default=0) > 8 else "center")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(axis="x", visible=False)
    if title:
        ax.set_title(title)
    _legend(ax, by)
    _save(fig, out)


def heatmap(row_labels: Sequence[str], col_labels: Sequence[str], cells: dict[tuple[str, str], Any], out: Path, *,
            x_label: str, y_label: str, metric: str, title: str | None = None) -> None:
    """A pivot as a heatmap, each cell annotated with its mean; empty cells stay blank."""
    import numpy as np

    plt = _pyplot()
    grid = np.full((len(row_labels), len(col_labels)), np.nan)
    for i, r in enumerate(row_labels):
        for j, c in enumerate(col_labels):
            if (r, c) in cells:
                grid[i, j] = cells[(r, c)].mean
    w = max(3.5, 0.7 * len(col_labels) + 2.0)
    h = max(2.2, 0.4 * len(row_labels) + 1.2)
    fig, ax = plt.subplots(figsize=(w, h))
    ax.grid(False)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            if math.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color="white" if v < mid else "black")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30 if len(col_labels) > 4 else 0,
                  ha="right" if len(col_labels) > 4 else "center")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    fig.colorbar(im, ax=ax, label=metric)
    if title:
        ax.set_title(title)
    _save(fig, out)


def reliability(curves: dict[str, tuple[Sequence[float], Sequence[float], Sequence[int], float]], out: Path, *,
                x_label: str, title: str | None = None, by: str | None = None) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, one curve per group, the diagonal dashed.

    `curves`: {label: (mean confidence per non-empty bin, accuracy per bin, count per bin, ECE)}.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.0, 3.0))
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=0.8, label="perfect calibration")
    for label, (conf, acc, _counts, ece) in curves.items():
        ax.plot(conf, acc, marker="o", label=f"{label} (ECE {ece:.3f})" if math.isfinite(ece) else label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(x_label)
    ax.set_ylabel("accuracy")
    if title:
        ax.set_title(title)
    ax.legend(title=by, loc="lower right")
    _save(fig, out)


def scatter(groups: dict[str, list[tuple[str, float, float]]], rhos: dict[str, float], out: Path, *, x_label: str,
            y_label: str, by: str | None, title: str | None = None, annotate: bool = True) -> None:
    """The pairs behind `labdeck correlate`: one colour per group, Spearman's rho in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots()
    for label, pairs in groups.items():
        rho = rhos.get(label, float("nan"))
        name = f"{label} (ρ = {rho:+.2f})" if math.isfinite(rho) else label
        ax.scatter([p[1] for p in pairs], [p[2] for p in pairs], s=16, label=name)
        if annotate and len(pairs) <= 12:
            for m, x, y in pairs:
                ax.annotate(m, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    _legend(ax, by)
    _save(fig, out)
