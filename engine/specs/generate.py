"""Generation: teacher responses, sampling sweeps, best-of-N (science.md §5, §8.3, §9.5)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.specs.base import JobSpecBase
from engine.specs.common import DatasetRef, ModelRef


class GenerateSpec(JobSpecBase):
    """Generate responses for every record of a dataset with one model."""

    kind: Literal["generate"] = "generate"
    model: ModelRef
    """The generator."""
    dataset: DatasetRef
    """The prompts."""
    template: Literal["chat", "struq", "raw", "alpaca"] = "chat"
    """'chat': the model's own chat template; 'struq': the StruQ/SecAlign format (§9.1); 'raw': instruction text as is; 'alpaca': the Alpaca prompt."""
    system_prompt: str | None = None
    """Optional system message for chat templates."""
    max_new_tokens: int = Field(2048, ge=1, le=131072)
    """Longest response, in tokens (§5 default 2048)."""
    temperature: float = Field(0.0, ge=0.0, le=10.0)
    """0 is greedy decoding (the CAR paper's default)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling; 0 turns it off."""
    repetition_penalty: float = Field(1.0, gt=0.0)
    """1.0 is none."""
    n: int = Field(1, ge=1, le=64)
    """Samples per prompt."""
    select: Literal["none", "best", "worst", "first"] = "none"
    """With n > 1: keep all ('none'), the reward argmax ('best'), argmin ('worst') or the first sample (§5)."""
    reward_model: ModelRef | None = None
    """Reward model for best/worst-of-N selection."""
    batch_size: int = Field(8, ge=1, le=4096)
    """Prompts per batch (length-sorted, left-padded)."""
    max_prompt_tokens: int = Field(4096, ge=1)
    """Prompts longer than this are truncated from the left, and counted."""
    backend: Literal["hf", "vllm"] = "hf"
    """'vllm' uses vLLM when it is installed."""
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    """vLLM's share of GPU memory; set it explicitly on a shared card."""
    attack: Literal["none", "naive", "ignore", "completion_real", "completion_realcmb"] = "none"
    """Prompt-injection attack built into records that have an input (§9.5)."""
    defense_filter: bool = False
    """Apply the secure front-end filter to the data part (§9.1), for StruQ/SecAlign models."""


    @model_validator(mode="after")
    def _selection_needs_reward(self) -> GenerateSpec:
        if self.select in ("best", "worst") and self.reward_model is None:
            raise ValueError("select: best/worst-of-N needs a reward_model")
        if self.select != "none" and self.n < 2:
            raise ValueError("select: choosing among samples needs n >= 2")
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n: several samples per prompt need temperature > 0 (greedy gives n copies)")
        return self
