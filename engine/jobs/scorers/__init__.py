"""The per-sample scorers of the score job, one module per family, and the registry by spec type.

base (Item, Scorer), reward (also best-of-N's reward model), likelihood (loss, PPL, IFD), strings
(length, injection), judge (AE2-style pairwise), arena_hard (Arena-Hard v0.1), correctness and confidence (calibration), and
endpoint (the one OpenAI-compatible HTTP call the judges share).
"""

from __future__ import annotations

from engine.jobs.scorers.arena_hard import ArenaHardScorer
from engine.jobs.scorers.base import Item, Scorer
from engine.jobs.scorers.confidence import ConfidenceScorer
from engine.jobs.scorers.correctness import CorrectnessScorer
from engine.jobs.scorers.judge import JudgeScorer
from engine.jobs.scorers.likelihood import LossScorer
from engine.jobs.scorers.reward import RewardModel, RewardScorer
from engine.jobs.scorers.strings import InjectionScorer, LengthScorer

SCORERS: dict[str, type[Scorer]] = {
    "reward": RewardScorer, "loss": LossScorer, "length": LengthScorer, "injection": InjectionScorer,
    "judge": JudgeScorer, "arena_hard": ArenaHardScorer, "confidence": ConfidenceScorer,
    "correctness": CorrectnessScorer,
}

__all__ = ["SCORERS", "Item", "RewardModel", "Scorer"]
