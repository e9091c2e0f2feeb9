"""What every scorer of the score job shares: the record view (`Item`), the `Scorer` interface and the
JSON rule for numbers that were not computed.

Each scorer turns records into a few per-sample fields; aggregation (means, CAR, win rates, ASR,
ECE, AUROC) happens in `engine.jobs.score` with the pure functions of `engine.metrics`. Model
forward passes are batched by `_batching.sorted_batches` (longest first, token budget) and report
real tokens/s and the padding fraction through `Throughput`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.jobs._batching import Throughput, sorted_batches
from engine.jobs._prompts import user_text

NAN = float("nan")


def _finite(x: float) -> float | None:
    """JSON has no NaN: per-sample fields store None for 'not computed'."""
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class Item:
    """One record as the scorers see it."""

    instruction: str
    data: str
    response: str
    record: dict[str, Any]

    def user(self, join: str) -> str:
        return user_text(self.instruction, self.data, join)


@dataclass
class Scorer:
    """Base: `prepare` checks and tokenizes (raising JobInputError), `score` does one batch of indices."""

    spec: Any
    join: str
    device: str = "cpu"
    stats: Throughput = field(default_factory=Throughput)
    info: dict[str, Any] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    outputs: Path | None = None  # the job's outputs folder (an endpoint scorer keeps its answers there)

    def __post_init__(self) -> None:
        """Subclasses set `fields` here (a dataclass runs it only if the decorated base defines it)."""

    @property
    def key(self) -> str:
        return self.spec.type

    def params(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    def required_fields(self) -> dict[str, str | None]:
        return {}

    def prepare(self, items: list[Item]) -> None:
        self.items = items

    def lengths(self, idxs: list[int]) -> list[int]:
        return [1] * len(idxs)

    def batches(self, idxs: list[int]) -> list[list[int]]:
        """Batches of record indices, longest first."""
        lens = self.lengths(idxs)
        bs = getattr(self.spec, "batch_size", 256)
        budget = getattr(self.spec, "max_batch_tokens", None)
        return [[idxs[j] for j in b] for b in sorted_batches(lens, bs, budget)]

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        raise NotImplementedError
