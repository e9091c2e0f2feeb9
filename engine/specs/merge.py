"""Merging: ExPO extrapolation, LoRA merge, checkpoint averaging (docs/science.md §8).

Torch-free on purpose: the CLI, TUI and worker import this module.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from engine.specs.base import JobSpecBase
from engine.specs.common import ModelRef
from engine.specs.form import form

# The New-job form (engine.specs.form): each method's inputs at the top, only for that method.
EXPO = form(common=True, when={"method": ["expo"]})
LORA = form(common=True, when={"method": ["lora"]})
AVERAGE = form(common=True, when={"method": ["average"]})


class MergeSpec(JobSpecBase):
    """Build a new model from others, saved as safetensors with a tokenizer to outputs/model."""

    kind: Literal["merge"] = "merge"
    method: Literal["expo", "lora", "average"] = Field("expo", json_schema_extra=form(common=True))
    """'expo': θ_aligned + α(θ_aligned − θ_sft) over every tensor (§8.1); 'lora': fold an adapter into its base; 'average': weighted mean of checkpoints."""
    sft: ModelRef | None = Field(None, json_schema_extra=EXPO)
    """ExPO: the weaker starting checkpoint (SFT) that `aligned` was trained from."""
    aligned: ModelRef | None = Field(None, json_schema_extra=EXPO)
    """ExPO: the aligned (DPO/RLHF) checkpoint; its config and tokenizer are kept (§8.1)."""
    alpha: float = Field(0.3, ge=-1.0, le=1000.0, json_schema_extra=EXPO)
    """ExPO strength: 0 gives `aligned`, −1 gives `sft`; under-trained checkpoints need α far above 1 (the zephyr runs used 8 and 25, §8.2)."""
    base: ModelRef | None = Field(None, json_schema_extra=LORA)
    """LoRA: the base model; default the base recorded in the adapter's adapter_config.json."""
    adapter: str | None = Field(None, json_schema_extra=LORA)
    """LoRA: the adapter folder (adapter_config.json + adapter_model.safetensors), e.g. a finetune job's outputs/model."""
    models: list[ModelRef] = Field([], json_schema_extra=AVERAGE)
    """Average: the checkpoints (same architecture, same tensor names and shapes); the first one's config and tokenizer are kept."""
    weights: list[float] | None = Field(None, json_schema_extra=AVERAGE)
    """Average: one weight per model, normalised to sum 1 (default equal)."""
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    """Arithmetic dtype: float32 (safer, §8.1) or bfloat16 (what the ExPO repository does; may differ in the last bits). The result is saved in the source dtype either way."""

    @field_validator("alpha")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if any(not math.isfinite(w) for w in v):
            raise ValueError("weights must be finite numbers")
        if abs(sum(v)) < 1e-12:
            raise ValueError("weights sum to zero; they are normalised by their sum")
        return v

    @model_validator(mode="after")
    def _inputs_for_method(self) -> MergeSpec:
        need = {"expo": ("sft", "aligned"), "lora": ("adapter",)}.get(self.method, ())
        for f in need:
            if getattr(self, f) is None:
                raise ValueError(f"{f}: required for method {self.method}")
        if self.adapter is not None and not self.adapter.strip():
            raise ValueError("adapter: an adapter folder path")
        unused = {"expo": ("base", "adapter", "models", "weights"), "lora": ("sft", "aligned", "models", "weights"),
                  "average": ("sft", "aligned", "base", "adapter")}[self.method]
        for f in unused:
            if f in self.model_fields_set and getattr(self, f) not in (None, []):
                raise ValueError(f"{f}: not used by method {self.method}")
        if self.method == "average":
            if len(self.models) < 2:
                raise ValueError("models: averaging needs at least two checkpoints")
            if self.weights is not None and len(self.weights) != len(self.models):
                raise ValueError(f"weights: one weight per model ({len(self.models)} models, {len(self.weights)} weights)")
        if self.method == "expo" and self.sft is not None and self.aligned is not None:
            if self.sft.path == self.aligned.path and self.sft.revision == self.aligned.revision:
                raise ValueError("aligned: the same checkpoint as sft; ExPO needs the SFT model and the model aligned from it")
        return self
