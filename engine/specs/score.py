"""Scoring: per-sample scores and per-job aggregates (science.md §0-§4, §7, §9.6, §10)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.specs.base import JobSpecBase, StrictModel
from engine.specs.common import ModelRef


class RewardScorer(StrictModel):
    """Reward from a sequence-classification reward model, with its own chat template (§2)."""

    type: Literal["reward"] = "reward"
    model: ModelRef
    max_length: int = 4096
    batch_size: int = 8


class LossScorer(StrictModel):
    """Response loss L(A|Q) and perplexity under a model (§0); with `ifd`, also L(A) and IFD (§1)."""

    type: Literal["loss"] = "loss"
    model: ModelRef
    template: Literal["chat", "raw", "superfiltering", "struq"] = "chat"
    """How the prompt prefix is built (UNPINNED in the CAR paper; recorded with the result)."""
    ifd: bool = False
    """Also compute the unconditional loss and both IFD forms."""
    max_length: int = 1024
    batch_size: int = 8
    prefix: str = "loss"
    """Field name prefix, so one job can score under several models."""


class LengthScorer(StrictModel):
    """Response length in characters, and in tokens of a fixed tokenizer (§5)."""

    type: Literal["length"] = "length"
    tokenizer: str | None = None


class InjectionScorer(StrictModel):
    """Attack success: begin-with and in-response (§9.6)."""

    type: Literal["injection"] = "injection"
    keyword: str = "hacked"


class JudgeScorer(StrictModel):
    """Pairwise preference against a reference output (§7.1): local judge logprobs or an HTTP endpoint."""

    type: Literal["judge"] = "judge"
    model: ModelRef | None = None
    """Local judge model; or set `endpoint`."""
    endpoint: str | None = None
    """OpenAI-compatible base URL for the judge."""
    endpoint_model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    reference_field: str = "reference"
    """Record field with the baseline output."""
    seed: int = 0


class ConfidenceScorer(StrictModel):
    """P(correct) through the uncertainty query (§10.2), with correctness from `label_field`."""

    type: Literal["confidence"] = "confidence"
    model: ModelRef
    label_field: str = "correct"
    group_field: str | None = None
    """Per-group metrics (e.g. MMLU subject)."""
    batch_size: int = 8


Scorer = Annotated[
    RewardScorer | LossScorer | LengthScorer | InjectionScorer | JudgeScorer | ConfidenceScorer,
    Field(discriminator="type"),
]


class ScoreSpec(JobSpecBase):
    """Add per-sample fields to a records file and report per-job aggregates."""

    kind: Literal["score"] = "score"
    records: str | list[str]
    """A records file (jsonl), e.g. a generate job's output; a list concatenates several."""
    instruction_field: str = "instruction"
    input_field: str | None = "input"
    response_field: str = "response"
    scorers: list[Scorer] = Field(min_length=1)
    """What to compute for every record."""
    car_beta: float | None = Field(None, ge=0)
    """If set, report CAR = reward / (1 + beta * loss) (§3; beta is UNPINNED, recorded)."""
