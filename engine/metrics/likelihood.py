"""Response loss, perplexity and IFD from token log-probabilities (docs/science.md §0, §1).

A job process scores the response tokens under a causal LM and stores their log-probs; these
functions turn those numbers into the metrics, so that every variant (loss ratio or PPL ratio,
filter threshold) can be recomputed in a notebook without GPU time.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from ._arrays import as_1d, scalar_or_array


def response_loss(token_logprobs: ArrayLike) -> float:
    """Mean negative log-likelihood in nats over the response tokens, L(A|P) of §0.

    `token_logprobs` are log p(x_t | x_<t) for the response positions only (prefix positions
    excluded, as HF does with labels = -100). This equals `model(..., labels=...).loss`.
    """
    lp = as_1d(token_logprobs, "token_logprobs")
    return float(-lp.mean())


def perplexity(token_logprobs: ArrayLike) -> float:
    """PPL(A|P) = exp(L(A|P)) over the response tokens (§0)."""
    return float(np.exp(response_loss(token_logprobs)))


def ifd(
    loss_conditioned: ArrayLike,
    loss_unconditioned: ArrayLike,
    form: Literal["loss", "ppl"] = "loss",
) -> float | np.ndarray:
    """Instruction-Following Difficulty (§1.1), per sample; scalars or arrays.

    - `form="loss"` (Cherry_LLM, the recommended default): L(A|Q) / L(A).
    - `form="ppl"` (Superfiltering's stored `ifd_ppl`): PPL(A|Q) / PPL(A) = exp(L(A|Q) - L(A)).

    The two can rank samples differently; which one the CAR paper used is UNPINNED (§1.1), so
    record `form` with every result.
    """
    cond = np.asarray(loss_conditioned, dtype=np.float64)
    uncond = np.asarray(loss_unconditioned, dtype=np.float64)
    if form == "loss":
        out = cond / uncond
    elif form == "ppl":
        out = np.exp(cond - uncond)
    else:
        raise ValueError(f"form must be 'loss' or 'ppl', got {form!r}")
    return scalar_or_array(out, loss_conditioned, loss_unconditioned)


def ifd_keep(ifd_values: ArrayLike, threshold: float = 1.0) -> np.ndarray:
    """Cherry_LLM's filter (§1.2): keep a sample only if its loss-ratio IFD is <= threshold (1)."""
    return np.asarray(ifd_values, dtype=np.float64) <= threshold
