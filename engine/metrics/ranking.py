"""Rank-based scores: AUROC and Spearman's ρ (docs/science.md §4.2, §10.4).

Thin wrappers over scikit-learn and scipy that fix the conventions the papers use (NaN AUROC for
a single class, average ranks for ties, plain floats out). Both libraries are imported inside the
functions: importing them costs about a second on a 2-core box, and `engine.metrics` must load
fast.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_1d, as_labels


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC-AUC of `scores` against binary `labels` (sklearn's roc_auc_score); NaN for one class.

    §10.4 reports AUROC of P(correct) per MMLU subject, and a subject where every answer is right
    (or every one wrong) has no defined AUROC.
    """
    s = as_1d(scores, "scores")
    y = as_labels(labels, s.size)
    if np.unique(y).size < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman ρ on raw values, average ranks for ties (scipy.stats.spearmanr), §4.2.

    Metrics are not sign-flipped before ranking (higher IFD counts as "more"). NaN when either
    side is constant.
    """
    a = as_1d(x, "x")
    b = as_1d(y, "y")
    if a.size != b.size:
        raise ValueError(f"x and y differ in length: {a.size} != {b.size}")
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])
