"""Merging: ExPO extrapolation, LoRA merge, checkpoint averaging (science.md §8)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.specs.base import JobSpecBase
from engine.specs.common import ModelRef


class MergeSpec(JobSpecBase):
    """Build a new model from others, saved as safetensors with a tokenizer."""

    kind: Literal["merge"] = "merge"
    method: Literal["expo", "lora", "average"] = "expo"
    """'expo': θ_aligned + α(θ_aligned − θ_sft); 'lora': fold an adapter into its base; 'average': mean of checkpoints."""
    sft: ModelRef | None = None
    """ExPO: the weaker starting checkpoint (SFT)."""
    aligned: ModelRef | None = None
    """ExPO: the aligned (DPO/RLHF) checkpoint trained from `sft`; its tokenizer is kept."""
    alpha: float = Field(0.3, ge=-1.0, le=1000.0)
    """ExPO extrapolation strength; under-trained checkpoints need α far above 1."""
    base: ModelRef | None = None
    """LoRA: the base model."""
    adapter: str | None = None
    """LoRA: the adapter folder."""
    models: list[ModelRef] = []
    """Average: the checkpoints to average."""
    weights: list[float] | None = None
    """Average: weights (default equal)."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Arithmetic dtype; the result is saved in the source dtype."""

    @model_validator(mode="after")
    def _inputs_for_method(self) -> MergeSpec:
        need = {"expo": ("sft", "aligned"), "lora": ("base", "adapter")}.get(self.method, ())
        for f in need:
            if getattr(self, f) is None:
                raise ValueError(f"{f}: required for method {self.method}")
        if self.method == "average":
            if len(self.models) < 2:
                raise ValueError("models: averaging needs at least two checkpoints")
            if self.weights is not None and len(self.weights) != len(self.models):
                raise ValueError("weights: one weight per model")
        return self
