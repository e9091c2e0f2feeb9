"""Input coercion shared by the metric functions.

Kept private and tiny: every public metric accepts plain lists, numpy arrays or (where stated)
torch tensors, and these helpers turn the first two into validated float arrays. Torch is only
ever *detected* here, never imported: a tensor can exist only if the caller already imported torch.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_torch_tensor(x: Any) -> bool:
    """True when `x` is a torch tensor, without importing torch (it is already loaded if x is one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def as_1d(x: Any, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Return `x` as a 1-D float64 array, raising a ValueError that names the argument."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def as_labels(y: Any, n: int, name: str = "labels") -> np.ndarray:
    """Return binary labels as an int array of length `n`; anything but 0/1 is an error."""
    arr = np.asarray(y)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1")
    return arr.astype(np.int64)


def scalar_or_array(result: np.ndarray, *inputs: Any) -> float | np.ndarray:
    """Give a Python float back when every input was a scalar, else the array."""
    if all(np.ndim(v) == 0 for v in inputs):
        return float(result)
    return result
