"""The DPO (sigmoid) loss and its logged quantities, as SecAlign trains with (docs/science.md §9.3).

L = -log σ(β·[log πθ(y_w|x) - log π_ref(y_w|x)] - β·[log πθ(y_l|x) - log π_ref(y_l|x)]), where
each log π is the *sum* of the response's token log-probs. Kept here, on floats, numpy arrays and
torch tensors alike, so that a notebook can check a trainer's logged loss, margins and accuracy
from stored log-probs. Torch is imported only when a tensor is passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._arrays import is_torch_tensor


def dpo_rewards(policy_logps: Any, ref_logps: Any, beta: float = 0.1) -> Any:
    """Implicit rewards β·(log πθ(y|x) - log π_ref(y|x)), TRL's `chosen_rewards`/`rejected_rewards`."""
    if is_torch_tensor(policy_logps) or is_torch_tensor(ref_logps):
        return beta * (policy_logps - ref_logps)
    return _out(beta * (np.asarray(policy_logps, dtype=np.float64) - np.asarray(ref_logps, dtype=np.float64)))


def dpo_reward_margin(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
) -> Any:
    """chosen reward - rejected reward, the argument of the sigmoid (0.7 in the §9.3 example)."""
    return dpo_rewards(policy_chosen_logps, ref_chosen_logps, beta) - dpo_rewards(
        policy_rejected_logps, ref_rejected_logps, beta
    )


def dpo_loss(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
) -> Any:
    """Per-pair DPO sigmoid loss -log σ(margin), same shape and kind as the inputs (§9.3).

    Computed as softplus(-margin), which stays finite for large margins. Take `.mean()` for the
    batch loss. The §9.3 example (-10, -20, -12, -15, β 0.1) gives 0.403186.
    """
    margin = dpo_reward_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    if is_torch_tensor(margin):
        import torch.nn.functional as F

        return -F.logsigmoid(margin)
    return _out(np.logaddexp(0.0, -np.asarray(margin, dtype=np.float64)))


def dpo_reward_accuracy(
    policy_chosen_logps: Any,
    policy_rejected_logps: Any,
    ref_chosen_logps: Any,
    ref_rejected_logps: Any,
    beta: float = 0.1,
) -> float:
    """Fraction of pairs whose chosen reward exceeds the rejected one (TRL's `rewards/accuracies`)."""
    margin = dpo_reward_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    if is_torch_tensor(margin):
        return float((margin > 0).float().mean().item())
    return float(np.mean(np.asarray(margin) > 0))


def _out(result: np.ndarray) -> Any:
    """A Python float for scalar inputs, the array otherwise."""
    return float(result) if np.ndim(result) == 0 else result
