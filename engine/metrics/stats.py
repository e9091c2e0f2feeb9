"""Summary statistics for repeated runs (seeds, subjects)."""

from __future__ import annotations

from numpy.typing import ArrayLike

from ._arrays import as_1d


def mean_std(values: ArrayLike, ddof: int = 1) -> tuple[float, float]:
    """(mean, standard deviation) of `values`.

    `ddof=1` (sample std) by default, which is what "mean ± std over seeds" usually means; the std
    is NaN for a single value rather than a misleading 0. Pass ddof=0 for the population std.
    """
    v = as_1d(values, "values")
    std = float(v.std(ddof=ddof)) if v.size > ddof else float("nan")
    return float(v.mean()), std
