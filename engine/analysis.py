"""Cross-job analysis: how well a per-job metric predicts a per-job outcome (docs/science.md §4).

CAR Table 4: for each base model B separately, Spearman's ρ between a metric of each generator's
data (mean reward, IFD, CAR, ...) and the AP of B fine-tuned on that data, over the generators;
the "Average" row is the mean of the per-model ρ. The caller reads the values from the store (one
row per job: its group, its metric, its outcome) and passes plain numbers; this module imports
neither the store nor torch, so the CLI, the TUI and a notebook can all call it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class GroupCorrelation:
    group: Hashable
    rho: float  # NaN when a side is constant or fewer than 3 jobs
    n: int  # jobs with both values finite


def spearman_by_group(rows: Iterable[tuple[Hashable, float | None, float | None]]) -> dict[Hashable, GroupCorrelation]:
    """Spearman ρ of x against y within each group, from (group, x, y) triples, one per job.

    Raw values are ranked (no sign flips; average ranks for ties, §4.2). Triples with a missing or
    non-finite x or y are left out of their group. Fewer than 3 jobs give NaN: a rank correlation
    of two points is always ±1 and says nothing.
    """
    from engine.metrics import spearman

    by: dict[Hashable, tuple[list[float], list[float]]] = {}
    for group, x, y in rows:
        xs, ys = by.setdefault(group, ([], []))
        if _finite(x) and _finite(y):
            xs.append(float(x))  # type: ignore[arg-type]
            ys.append(float(y))  # type: ignore[arg-type]
    out = {}
    for group, (xs, ys) in by.items():
        rho = spearman(xs, ys) if len(xs) >= 3 else float("nan")
        out[group] = GroupCorrelation(group, rho, len(xs))
    return out


def mean_rho(result: dict[Hashable, GroupCorrelation]) -> float:
    """The "Average" row of Table 4: the plain mean of the per-group ρ (NaN groups left out)."""
    values = [c.rho for c in result.values() if _finite(c.rho)]
    return sum(values) / len(values) if values else float("nan")


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
