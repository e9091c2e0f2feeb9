"""AlpacaEval-style win rates from judge outputs (docs/science.md §7.1) and AP (§4.1).

Hand-written rather than depending on `alpaca_eval`: that package pulls in the OpenAI client,
pandas and a dataset download, while these are a few lines of arithmetic on stored judge
log-probs. The conventions follow alpaca_eval's `logprob_parser` and scoring rules.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_1d, scalar_or_array


def alpaca_preference_from_logprobs(lp_m: float | None, lp_M: float | None, switched: bool = False) -> float:
    """Preference in [1, 2] from the judge's log-probs of the tokens "m" and "M" (§7.1).

    1 means the baseline wins, 2 the model. A token missing from the top log-probs (None or -inf)
    counts as probability 0; with both missing the preference is NaN (alpaca_eval then drops the
    item). `switched=True` means the outputs were shown in swapped order, and maps x -> 3 - x.
    """
    a = -math.inf if lp_m is None else float(lp_m)
    b = -math.inf if lp_M is None else float(lp_M)
    if a == -math.inf and b == -math.inf:
        return float("nan")
    p_m = float(np.exp(-np.logaddexp(0.0, b - a)))  # exp(a) / (exp(a) + exp(b)), stably
    preference = 2.0 - p_m
    return 3.0 - preference if switched else preference


def win_rate(p_model_wins: ArrayLike) -> float:
    """Weighted win rate in percent: mean P(model beats baseline) × 100 (§7.1).

    `p_model_wins` is `preference - 1` per item, in [0, 1]. NaN items (unparsable judgments) are
    dropped, as alpaca_eval does; NaN if nothing is left.
    """
    p = _valid_probabilities(p_model_wins)
    return float(p.mean() * 100) if p.size else float("nan")


def discrete_win_rate(p_model_wins: ArrayLike) -> float:
    """(n_wins + n_draws / 2) / n_total × 100, a win when p > 0.5 and a draw when p == 0.5 (§7.1)."""
    p = _valid_probabilities(p_model_wins)
    if p.size == 0:
        return float("nan")
    return discrete_win_rate_from_counts(int((p > 0.5).sum()), int((p == 0.5).sum()), p.size)


def discrete_win_rate_from_counts(n_wins: int, n_draws: int, n_total: int) -> float:
    """Discrete win rate from a leaderboard row's counts, e.g. 251 wins, 2 draws, 805 -> 31.304%."""
    if n_total <= 0:
        raise ValueError(f"n_total must be positive, got {n_total}")
    return (n_wins + n_draws / 2) / n_total * 100


def average_performance(lc_win_rate: ArrayLike, arena_hard_win_rate: ArrayLike) -> float | np.ndarray:
    """AP of CAR Table 4 (§4.1): mean of AlpacaEval 2 LC and Arena-Hard WR; raw AE2 WR excluded."""
    lc = np.asarray(lc_win_rate, dtype=np.float64)
    ah = np.asarray(arena_hard_win_rate, dtype=np.float64)
    return scalar_or_array((lc + ah) / 2, lc_win_rate, arena_hard_win_rate)


def _valid_probabilities(p_model_wins: ArrayLike) -> np.ndarray:
    p = as_1d(p_model_wins, "p_model_wins", allow_empty=True)
    p = p[~np.isnan(p)]
    if ((p < 0) | (p > 1)).any():
        raise ValueError("p_model_wins must lie in [0, 1] (pass preference - 1, not the preference)")
    return p
