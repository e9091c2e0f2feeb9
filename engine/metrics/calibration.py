"""Calibration metrics for binary uncertainty estimators (docs/science.md §10.4).

Written by hand because the comparison target is the calibration-tuning repository's own ECE
(binary, max-probability confidence, 10 equal-width bins, conf == 1.0 dropped), which neither
scikit-learn nor scipy provides, and because the "one-sided" reliability ECE on P(correct) must
be available next to it, clearly labelled.

Bin edges are k / bins, each correctly rounded, and bin k is [k/bins, (k+1)/bins). The official
code compares against `np.linspace(0, 1, 11)`, whose edge 6 is 0.6000000000000001, so in float64
a confidence of exactly 0.6 would land in bin 5; it escaped that only because its confidences are
float32. The §10.4 worked example puts 0.60 in bin 6, and so do these edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_1d, as_labels
from .ranking import auroc

EceMode = Literal["two_sided", "one_sided"]


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics behind an ECE (empty bins included, with count 0 and NaN means)."""

    edges: np.ndarray  # bins + 1 edges, edges[k] = k / bins
    counts: np.ndarray  # items per bin
    mean_confidence: np.ndarray  # mean binned value per bin (NaN when empty)
    accuracy: np.ndarray  # mean outcome per bin (NaN when empty)
    n_dropped: int  # items left out of every bin (conf == 1.0 under the official quirk)


def p_correct_from_logits(logits: ArrayLike) -> np.ndarray:
    """P(correct) = softmax(z)[:, 1] for N x 2 logits, computed stably as σ(z1 - z0) (§10.4)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"logits must have shape (N, 2), got {z.shape}")
    return np.exp(-np.logaddexp(0.0, z[:, 0] - z[:, 1]))


def two_sided_confidence(p_correct: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(conf, hit) of the binary classifier view used by the official ECE (§10.4).

    pred = argmax([1 - p, p]) with ties going to index 0 ("incorrect"), conf = p[pred] in
    [0.5, 1], hit = (pred == y).
    """
    p = _probabilities(p_correct)
    y = as_labels(labels, p.size)
    q = 1.0 - p
    pred = (p > q).astype(np.int64)
    conf = np.where(pred == 1, p, q)
    return conf, (pred == y).astype(np.float64)


def reliability_bins(
    p_correct: ArrayLike,
    labels: ArrayLike,
    bins: int = 10,
    mode: EceMode = "two_sided",
    drop_conf_one: bool = True,
) -> ReliabilityBins:
    """Bin the confidences and outcomes that an ECE is computed from (§10.4).

    - `mode="two_sided"` (the paper's number): bins conf = max(p, 1-p) against hit = [pred == y].
    - `mode="one_sided"`: bins P(correct) itself against y (a reliability diagram over [0, 1]).
    - `drop_conf_one=True` replicates the official quirk: a value of exactly 1.0 falls in no bin
      and leaves both numerator and denominator. False puts it in the last bin (the correction).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if mode == "two_sided":
        value, outcome = two_sided_confidence(p_correct, labels)
    elif mode == "one_sided":
        value = _probabilities(p_correct)
        outcome = as_labels(labels, value.size).astype(np.float64)
    else:
        raise ValueError(f"mode must be 'two_sided' or 'one_sided', got {mode!r}")

    edges = np.arange(bins + 1, dtype=np.float64) / bins
    idx = np.searchsorted(edges, value, side="right") - 1  # value in [edges[k], edges[k+1]) -> k
    if drop_conf_one:
        keep = idx < bins
    else:
        idx = np.minimum(idx, bins - 1)
        keep = np.ones(idx.shape, dtype=bool)
    counts = np.bincount(idx[keep], minlength=bins)
    sum_value = np.bincount(idx[keep], weights=value[keep], minlength=bins)
    sum_outcome = np.bincount(idx[keep], weights=outcome[keep], minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_value = np.where(counts > 0, sum_value / counts, np.nan)
        accuracy = np.where(counts > 0, sum_outcome / counts, np.nan)
    return ReliabilityBins(edges, counts, mean_value, accuracy, int((~keep).sum()))


def ece(
    p_correct: ArrayLike,
    labels: ArrayLike,
    bins: int = 10,
    mode: EceMode = "two_sided",
    drop_conf_one: bool = True,
) -> float:
    """Expected Calibration Error, Σ_k (n_k / N_binned) · |mean conf_k - acc_k| (§10.4).

    Defaults reproduce the calibration-tuning code: two-sided, 10 bins, conf == 1.0 dropped.
    Empty bins are skipped; NaN when nothing could be binned (as the official code returns).
    Label which `mode` a number came from: the two modes give different values.
    """
    rb = reliability_bins(p_correct, labels, bins=bins, mode=mode, drop_conf_one=drop_conf_one)
    total = rb.counts.sum()
    if total == 0:
        return float("nan")
    filled = rb.counts > 0
    gaps = np.abs(rb.mean_confidence[filled] - rb.accuracy[filled])
    return float((rb.counts[filled] * gaps).sum() / total)


def calibration_summary(p_correct: ArrayLike, labels: ArrayLike, bins: int = 10) -> dict[str, float]:
    """The per-subject numbers of §10.4 in one dict.

    Keys: `n`; `acc` = mean(y), the accuracy of the answers being judged; `unc_acc` = mean(hit),
    the accuracy of the estimator itself; `ece_two_sided` (official, quirk included);
    `ece_one_sided`; `auroc` of P(correct) against y (NaN with a single class).
    """
    p = _probabilities(p_correct)
    y = as_labels(labels, p.size)
    _, hit = two_sided_confidence(p, y)
    return {
        "n": float(p.size),
        "acc": float(y.mean()),
        "unc_acc": float(hit.mean()),
        "ece_two_sided": ece(p, y, bins=bins, mode="two_sided"),
        "ece_one_sided": ece(p, y, bins=bins, mode="one_sided"),
        "auroc": auroc(p, y),
    }


def _probabilities(p_correct: ArrayLike) -> np.ndarray:
    p = as_1d(p_correct, "p_correct")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_correct must lie in [0, 1] with no NaN")
    return p
