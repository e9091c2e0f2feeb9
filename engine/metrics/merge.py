"""ExPO model extrapolation (docs/science.md §8).

θ_ExPO = θ_aligned + α·(θ_aligned - θ_SFT), evaluated as (1+α)·θ_aligned - α·θ_SFT so that α = 0
returns θ_aligned and α = -1 returns θ_SFT exactly. Low-precision tensors are computed in fp32 and
cast back to their dtype (the repo computes in bf16, which may differ in the last bits; record the
dtype). Pure arithmetic on whatever the caller loaded: torch is imported only for tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._arrays import is_torch_tensor


def expo(theta_sft: Any, theta_aligned: Any, alpha: float) -> Any:
    """Extrapolate one parameter from the SFT checkpoint through the aligned one (§8.1).

    Works on floats, numpy arrays and torch tensors. The result has the aligned parameter's type
    and dtype. α may be far above 1 (under-trained checkpoints used α = 8 or 25).
    """
    if is_torch_tensor(theta_aligned) or is_torch_tensor(theta_sft):
        return _expo_torch(theta_sft, theta_aligned, alpha)
    if np.ndim(theta_aligned) == 0 and np.ndim(theta_sft) == 0 and not isinstance(theta_aligned, np.ndarray):
        return (1.0 + alpha) * float(theta_aligned) - alpha * float(theta_sft)
    aligned = np.asarray(theta_aligned)
    sft = np.asarray(theta_sft)
    if aligned.shape != sft.shape:
        raise ValueError(f"shape mismatch: aligned {aligned.shape} vs sft {sft.shape}")
    out_dtype = aligned.dtype if np.issubdtype(aligned.dtype, np.floating) else np.dtype(np.float64)
    work = np.promote_types(out_dtype, np.float32)
    result = (1.0 + alpha) * aligned.astype(work) - alpha * sft.astype(work)
    return result.astype(out_dtype)


def expo_state_dict(sft: Mapping[str, Any], aligned: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """Apply `expo` to every parameter of two state dicts (§8.1: every tensor, lm_head included).

    The checkpoints must share the same keys (the repo asserts equal key counts; this checks the
    names too, which catches a renamed tied head).
    """
    if set(sft) != set(aligned):
        only_sft = sorted(set(sft) - set(aligned))[:5]
        only_aligned = sorted(set(aligned) - set(sft))[:5]
        raise ValueError(f"state dict keys differ: only in sft {only_sft}, only in aligned {only_aligned}")
    return {name: expo(sft[name], aligned[name], alpha) for name in aligned}


def _expo_torch(theta_sft: Any, theta_aligned: Any, alpha: float) -> Any:
    import torch

    aligned = torch.as_tensor(theta_aligned)
    sft = torch.as_tensor(theta_sft, device=aligned.device)
    if aligned.shape != sft.shape:
        raise ValueError(f"shape mismatch: aligned {tuple(aligned.shape)} vs sft {tuple(sft.shape)}")
    out_dtype = aligned.dtype if aligned.is_floating_point() else torch.float32
    work = torch.promote_types(out_dtype, torch.float32)
    result = (1.0 + alpha) * aligned.to(work) - alpha * sft.to(work)
    return result.to(out_dtype)
