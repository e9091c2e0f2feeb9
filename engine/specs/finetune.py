"""Fine-tuning: SFT (full or LoRA), DPO and calibration tuning (science.md §6, §9.3-§9.4, §10.3)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.specs.base import JobSpecBase, StrictModel
from engine.specs.common import DatasetRef, ModelRef


class LoraConfig(StrictModel):
    """LoRA adapters through peft."""

    r: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] | None = None
    """None uses peft's defaults for the architecture (q_proj, v_proj for Llama/Mistral)."""


class FinetuneSpec(JobSpecBase):
    """Train a model on a dataset; saves safetensors weights (or an adapter) with the tokenizer."""

    kind: Literal["finetune"] = "finetune"
    method: Literal["sft", "dpo", "calibration"] = "sft"
    """'sft': loss on response tokens; 'dpo': preference pairs (§9.3); 'calibration': §10.3."""
    preset: Literal["none", "car_table5", "struq_sft", "secalign_dpo", "calibration_tuning"] = "none"
    """Paper hyper-parameters; fields you set explicitly win over the preset."""
    model: ModelRef
    """The model to start from."""
    dataset: DatasetRef
    """Training records (instruction/input/output, messages, or prompt/chosen/rejected for DPO)."""
    template: Literal["chat", "struq", "raw", "alpaca"] = "chat"
    """How a record becomes a prompt; the response follows it and only it is trained on."""
    transform: Literal["none", "struq", "secalign", "bon_to_sft"] = "none"
    """Dataset transform applied first (§9.2)."""
    lora: LoraConfig | None = None
    """Set to train LoRA adapters instead of all weights."""
    learning_rate: float = Field(2e-5, gt=0, le=1.0)
    epochs: float = Field(1.0, gt=0, le=1000)
    max_steps: int | None = Field(None, gt=0)
    """If set, stop after this many optimizer steps (overrides epochs)."""
    per_device_batch: int = Field(1, ge=1, le=4096)
    grad_accum: int = Field(1, ge=1, le=4096)
    max_seq_len: int = Field(2048, ge=8, le=1_048_576)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    packing: bool = True
    """Padding-free packing where the attention kernel honours sequence boundaries; length grouping otherwise."""
    gradient_checkpointing: bool = False
    checkpoint_every: int | None = Field(None, gt=0)
    """Save a checkpoint every N optimizer steps."""
    keep_last: int = Field(2, ge=1)
    """Checkpoints to keep."""
    resume_from: str | None = None
    """A checkpoint folder of this run to continue from; 'latest' picks the newest."""
    dpo_beta: float = Field(0.1, gt=0)
    """DPO β (§9.3)."""
    calibration_style: Literal["probe", "lora", "lora_prompt"] = "lora_prompt"
    """§10.3 methods: an MLP probe on frozen features, LoRA + the head, or LoRA + Prompt."""
    jsd_weight: float = Field(0.0, ge=0)
    """κ for the JSD term of LoRA + Prompt (code default 0, README example 1)."""
    temperature_scaling: bool = True
    """Fit a temperature on the validation split after calibration training."""
    oom_retry: bool = False
    """On CUDA OOM, halve the micro-batch and double the accumulation, and go on."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """With several GPUs."""

    @model_validator(mode="after")
    def _checks(self) -> FinetuneSpec:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("warmup: give warmup_steps or warmup_ratio, not both")
        if self.method == "calibration" and self.calibration_style != "probe" and self.lora is None:
            self.lora = LoraConfig(r=8, alpha=32, dropout=0.1)
        return self
