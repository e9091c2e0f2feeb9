"""Bridges between labdeck and tools people already use: transformers/TRL trainers, lm-evaluation-harness,
experiment trackers.

Importing this package loads nothing heavy: `LabdeckCallback` subclasses transformers'
`TrainerCallback`, so it is built on first access (PEP 562 `__getattr__`), and a user's script, the
CLI or a test can import `engine.integrations` without transformers installed.

    from engine.integrations import LabdeckCallback
    Trainer(..., callbacks=[LabdeckCallback()])        # inside a labdeck job: live metrics, progress, checkpoints
"""

from __future__ import annotations

from typing import Any

from engine.integrations.lm_eval import lm_eval_metrics, report_lm_eval

__all__ = ["LabdeckCallback", "lm_eval_metrics", "register_report_to", "report_lm_eval"]


def __getattr__(name: str) -> Any:
    if name in ("LabdeckCallback", "register_report_to"):
        from engine.integrations import callback

        return getattr(callback, name)
    raise AttributeError(f"module 'engine.integrations' has no attribute {name!r}")
