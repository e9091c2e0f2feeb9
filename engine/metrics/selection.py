"""Best-of-N / Worst-of-N selection by reward (docs/science.md §5).

Written out because the tie rule matters for reproducing Table 3: the Magpie pipeline uses
Python's `list.index(max(...))`, so ties go to the first index, which numpy's argmax/argmin also
do. NaN rewards are rejected: `max` over them depends on their position.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_1d


def select_best_of_n(rewards: ArrayLike) -> int:
    """Index of the highest reward, the first one on ties (e.g. [.12, .31, .31, -.05, .2] -> 1)."""
    return int(np.argmax(_rewards(rewards)))


def select_worst_of_n(rewards: ArrayLike) -> int:
    """Index of the lowest reward, the first one on ties (e.g. [.12, .31, .31, -.05, .2] -> 3)."""
    return int(np.argmin(_rewards(rewards)))


def _rewards(rewards: ArrayLike) -> np.ndarray:
    r = as_1d(rewards, "rewards")
    if np.isnan(r).any():
        raise ValueError("rewards contain NaN; score or drop those responses first")
    return r
