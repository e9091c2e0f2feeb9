"""CAR, the Compatibility-Adjusted Reward (docs/science.md §3).

CAR(D_G, θ_B) = r(D_G) / (1 + β · L(D_G, θ_B)): quality as return, the student's loss on the
generator's responses as risk. No library computes it. The formula rests on two concordant
third-party summaries (the paper's equation was not read) and β is UNPINNED: it is a required
argument, to be recorded with every result.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_1d, scalar_or_array


def car(reward: ArrayLike, loss: ArrayLike, beta: float) -> float | np.ndarray:
    """r / (1 + β·L), element-wise on scalars or arrays (§3.1).

    No absolute value is taken: with a negative reward (Skywork RMs) a larger loss moves CAR
    towards 0, i.e. upwards (§3.2). β must be >= 0; β = 0 returns the reward unchanged.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    r = np.asarray(reward, dtype=np.float64)
    L = np.asarray(loss, dtype=np.float64)
    return scalar_or_array(r / (1.0 + beta * L), reward, loss)


def car_from_samples(rewards: ArrayLike, losses: ArrayLike, beta: float) -> float:
    """Dataset-level CAR from per-sample rewards and losses: CAR(mean r, mean L).

    CAR is defined on the dataset means (§3.1), which differs from the mean of per-sample CARs;
    this helper exists so that nobody averages the wrong way.
    """
    r = as_1d(rewards, "rewards")
    L = as_1d(losses, "losses")
    return float(car(r.mean(), L.mean(), beta))
