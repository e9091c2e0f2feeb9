"""Fine-tuning: SFT (full or LoRA), DPO and calibration tuning (docs/science.md §6, §9.1-§9.4, §10.3).

One spec kind covers the three training methods the seed experiments need, because they share
the data path (records -> template -> tokens with response-only labels), the optimiser, the
schedule, checkpointing and resuming; `method` picks the loss.

Presets carry the papers' hyper-parameters. A preset fills in only the fields the spec does not
set itself: the check is on the keys present in the input mapping, i.e. exactly pydantic's
`model_fields_set` of the parsed spec, so an explicit `learning_rate: 1e-5` always wins over the
preset's. A dumped spec (spec.json) has every field set, so re-parsing it never re-applies a preset
(parse(dump(x)) == x).

Torch-free on purpose: the CLI, TUI and worker import this module.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.specs.base import JobSpecBase, StrictModel
from engine.specs.common import DatasetRef, ModelRef
from engine.specs.form import form


class LoraConfig(StrictModel):
    """LoRA adapters through peft: only the adapters train, the base weights stay frozen."""

    r: int = Field(8, ge=1, le=1024)
    """Adapter rank (SecAlign DPO 64, calibration tuning 8; docs/science.md §9.4, §10.3)."""
    alpha: float = Field(16, gt=0)
    """lora_alpha; the update is scaled by alpha / r (SecAlign 8, calibration tuning 32)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the adapter input (both papers 0.1)."""
    target_modules: list[str] | Literal["all-linear"] | None = None
    """Modules that get adapters; None uses peft's defaults for the architecture (q_proj, v_proj for Llama/Mistral)."""

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list) and (not v or any(not m.strip() for m in v)):
            raise ValueError("give module names such as q_proj, v_proj, or 'all-linear', or leave it unset")
        return v


Method = Literal["sft", "dpo", "calibration"]

# The New-job form's layout (engine.specs.form): the fields at the top, and those of one method only.
COMMON = form(common=True)
DPO = form(when={"method": ["dpo"]})
CALIBRATION = form(when={"method": ["calibration"]})
LORA_PROMPT = form(when={"calibration_style": ["lora_prompt"]})
Preset = Literal["none", "car_table5", "struq_sft", "secalign_dpo", "calibration_tuning"]

# Effective (global) batch sizes of the papers; grad_accum is derived from the GPU count so the
# effective batch stays the paper's on any number of GPUs (docs/science.md §6: "on a single GPU, keep the
# effective batch at 32 by raising gradient accumulation to 32").
_PRESETS: dict[str, dict[str, Any]] = {
    # docs/science.md §6 (CAR Table 5) + the same authors' axolotl config: loss on responses only,
    # packing, gradient checkpointing, weight decay 0.
    "car_table5": dict(
        method="sft", learning_rate=2e-5, epochs=2, per_device_batch=1, _effective_batch=32,
        lr_scheduler="cosine", warmup_steps=100, max_seq_len=4096, weight_decay=0.0,
        gradient_checkpointing=True,
    ),
    # docs/science.md §9.4, SFT (None and StruQ) on base models; lr is Llama-7B's (Mistral-7B 2.5e-6,
    # Llama3-8B 2e-6: set learning_rate for those).
    "struq_sft": dict(
        method="sft", template="struq", transform="struq", learning_rate=2e-5, epochs=3,
        per_device_batch=4, _effective_batch=128, lr_scheduler="cosine", warmup_ratio=0.03,
        weight_decay=0.0, max_seq_len=512,
    ),
    # docs/science.md §9.3-§9.4, SecAlign DPO: LoRA r 64, alpha 8, dropout 0.1 on q/v; beta 0.1; lr is
    # Llama-7B's (Mistral-7B 1.4e-4, Llama3-8B 1.6e-4).
    "secalign_dpo": dict(
        method="dpo", template="struq", transform="secalign", dpo_beta=0.1, learning_rate=2e-4,
        epochs=3, per_device_batch=4, _effective_batch=256, lr_scheduler="cosine", max_seq_len=512,
        weight_decay=0.0, lora=dict(r=64, alpha=8, dropout=0.1, target_modules=["q_proj", "v_proj"]),
    ),
    # docs/science.md §10.3, LoRA + Prompt ("CT-Query"): r 8, alpha 32, dropout 0.1, peft's default
    # targets, lr 1e-4 cosine without warmup, batch 4, 5000 steps, seed 137; kappa 1.0 as in the
    # README example and the §11 summary (the code's default is 0).
    "calibration_tuning": dict(
        method="calibration", template="raw", calibration_style="lora_prompt", learning_rate=1e-4,
        lr_scheduler="cosine", warmup_steps=0, weight_decay=0.0, per_device_batch=4, grad_accum=1,
        max_steps=5000, seed=137, jsd_weight=1.0, lora=dict(r=8, alpha=32, dropout=0.1),
    ),
}

# Record field names each method expects when the spec does not name them (DatasetRef's own
# defaults are the Alpaca ones: instruction/input/output).
_METHOD_FIELDS: dict[str, dict[str, Any]] = {
    "dpo": dict(instruction_field="prompt", input_field=None),
    "calibration": dict(instruction_field="question", input_field=None, output_field="answer"),
}


def preset_values(preset: str) -> dict[str, Any]:
    """The fields a preset sets (for `labdeck spec finetune` and the TUI's form)."""
    return {k: v for k, v in _PRESETS.get(preset, {}).items() if not k.startswith("_")}


class FinetuneSpec(JobSpecBase):
    """Train a model on a dataset; saves safetensors weights (or an adapter) with the tokenizer to outputs/model."""

    kind: Literal["finetune"] = "finetune"
    method: Method = Field("sft", json_schema_extra=COMMON)
    """'sft': cross-entropy on response tokens only (§0, §6); 'dpo': preference pairs with a frozen reference (§9.3); 'calibration': an uncertainty estimator (§10.3)."""
    preset: Preset = "none"
    """Paper hyper-parameters (car_table5 §6, struq_sft and secalign_dpo §9.4, calibration_tuning §10.3); fields you set explicitly win over the preset."""
    model: ModelRef = Field(json_schema_extra=COMMON)
    """The model to start from (for DPO also the reference, unless `reference` is set)."""
    dataset: DatasetRef = Field(json_schema_extra=COMMON)
    """Training records: instruction/input/output or messages (SFT), prompt/chosen/rejected (DPO), question/answer/label (calibration)."""
    validation: DatasetRef | None = Field(None, json_schema_extra=CALIBRATION)
    """Calibration: the split the temperature is fitted on and the metrics are reported on; default a held-out `validation_fraction` of `dataset`."""
    validation_fraction: float = Field(0.1, gt=0, lt=1, json_schema_extra=CALIBRATION)
    """Calibration without `validation`: the share of records held out (seeded)."""
    template: Literal["chat", "struq", "raw", "alpaca"] = "chat"
    """How a record becomes a prompt: the model's chat template, the StruQ/SecAlign format with its delimiter tokens (§9.1), the text as is, or the Alpaca prompt. The response follows and only it is trained on."""
    system_prompt: str | None = Field(None, json_schema_extra=form(when={"template": ["chat"]}))
    """Optional system message for `template: chat`."""
    transform: Literal["none", "struq", "secalign", "bon_to_sft"] = Field("none", json_schema_extra=form(when={"method": ["sft", "dpo"]}))
    """Dataset transform applied first: the StruQ training mix or the SecAlign preference set (§9.2), or best-of-N output turned into SFT records."""
    injection_reference: DatasetRef | None = Field(None, json_schema_extra=form(when={"transform": ["struq", "secalign"]}))
    """StruQ/SecAlign transforms: the original alpaca_data.json, where Completion injections look up the reference response to an instruction (§9.2 step 4); default the sample's own output."""
    bon_select: Literal["best", "worst", "sampling"] = Field("best", json_schema_extra=form(when={"transform": ["bon_to_sft"]}))
    """transform bon_to_sft: keep the highest-reward response, the lowest, or the first sample (§5)."""
    chosen_field: str = Field("chosen", json_schema_extra=DPO)
    """DPO: the field with the preferred response."""
    rejected_field: str = Field("rejected", json_schema_extra=DPO)
    """DPO: the field with the dispreferred response."""
    label_field: str = Field("label", json_schema_extra=CALIBRATION)
    """Calibration: the field with the correctness label y (0/1 or false/true) of the answer (§10.1)."""
    lora: LoraConfig | None = Field(None, json_schema_extra=form(common=True, expand=True))
    """Set to train LoRA adapters instead of all weights."""
    merge_lora: bool = Field(False, json_schema_extra=form(when={"lora": None}))
    """With LoRA: save the base model with the adapters merged in, instead of the adapter folder."""
    reference: ModelRef | None = Field(None, json_schema_extra=DPO)
    """DPO: the frozen reference policy; default the starting model (with LoRA, the model with its adapters disabled, as TRL does)."""
    learning_rate: float = Field(2e-5, gt=0, json_schema_extra=COMMON)
    """Peak AdamW learning rate."""
    epochs: float = Field(1.0, gt=0, le=1000, json_schema_extra=COMMON)
    """Passes over the data (fractions allowed); ignored when `max_steps` is set."""
    max_steps: int | None = Field(None, gt=0, json_schema_extra=COMMON)
    """If set, stop after this many optimizer steps (overrides epochs; the data is cycled if needed)."""
    per_device_batch: int = Field(1, ge=1, le=4096)
    """Records per micro-batch on each device (DPO: pairs)."""
    grad_accum: int = Field(1, ge=1, le=4096)
    """Micro-batches accumulated per optimizer step; effective batch = per_device_batch x grad_accum x GPUs."""
    max_seq_len: int = Field(2048, ge=8, le=1_048_576)
    """Longest tokenised prompt + response; longer records are cut at the end and counted, records whose prompt alone fills it are dropped and counted."""
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup (constant keeps the peak after warmup)."""
    warmup_steps: int | None = Field(None, ge=0)
    """Linear warmup in optimizer steps (CAR: 100)."""
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    """Linear warmup as a share of all steps (StruQ: 0.03)."""
    weight_decay: float = Field(0.0, ge=0, le=1.0)
    """AdamW decoupled weight decay; biases and norm weights are never decayed."""
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    """AdamW beta1."""
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    """AdamW beta2."""
    adam_epsilon: float = Field(1e-8, gt=0, le=1e-3)
    """AdamW epsilon."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Clip the global gradient norm to this."""
    packing: Literal["auto", "on", "off"] = "auto"
    """'auto': padding-free batches (sequences concatenated with restarting position_ids) when the attention kernel is flash-attention varlen, length-grouped padded batches otherwise; 'on' forces padding-free also on SDPA/eager (correct since transformers 5 builds a block-causal mask, but attention then costs the packed length squared); 'off': length-grouped padding."""
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3"] = "auto"
    """Attention kernel; 'auto' is flash_attention_2 on a GPU when flash-attn is installed, SDPA otherwise."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more compute."""
    checkpoint_every: int | None = Field(None, gt=0)
    """Save a resumable checkpoint every N optimizer steps (under RUN_DIR/checkpoints)."""
    keep_last: int = Field(2, ge=1, le=1000)
    """Checkpoints to keep; older ones are deleted after a newer one is complete."""
    resume_from: str | None = "auto"
    """'auto': continue from this run's newest checkpoint if there is one; 'latest': the same, but it must exist; a path: that checkpoint (or checkpoints folder) of a run with the same training spec; null: start afresh (refused if this run already has checkpoints)."""
    dpo_beta: float = Field(0.1, gt=0, le=100, json_schema_extra=DPO)
    """DPO β: the strength of the pull toward the reference (§9.3: 0.1)."""
    calibration_style: Literal["probe", "lora", "lora_prompt"] = Field("lora_prompt", json_schema_extra=CALIBRATION)
    """§10.3: an MLP probe on frozen last-token features, LoRA + the same head, or LoRA + Prompt (the uncertainty query)."""
    jsd_weight: float = Field(0.0, ge=0, json_schema_extra=LORA_PROMPT)
    """κ for the JSD term of LoRA + Prompt (code default 0, README example 1)."""
    jsd_text: Literal["target", "answer"] = Field("target", json_schema_extra=LORA_PROMPT)
    """What the JSD term of LoRA + Prompt compares the two models on: the question with its gold target (as
    calibration-tuning does) or with the model's own answer."""
    target_field: str = Field("target", json_schema_extra=LORA_PROMPT)
    """Record field with the gold answer (for `jsd_text: target`)."""
    temperature_scaling: bool = Field(True, json_schema_extra=CALIBRATION)
    """Fit a temperature on the validation split after calibration training (the '-TS' variants)."""
    temperature_fit: Literal["adamw", "lbfgs"] = Field("adamw", json_schema_extra=CALIBRATION)
    """'adamw': calibration-tuning's temperature_scale.py (AdamW lr 1e-2, weight decay 1e-2, cosine over 2000 steps,
    batches of 64); 'lbfgs': the exact CE optimum of log T (L-BFGS)."""
    oom_retry: bool = False
    """On CUDA OOM, halve the micro-batch and double the accumulation (same examples per step), record it, and go on."""
    distributed: Literal["ddp", "fsdp"] = "ddp"
    """With several GPUs: replicate the model (DDP) or shard it (FSDP full_shard)."""

    @field_validator("learning_rate")
    @classmethod
    def _sane_lr(cls, v: float) -> float:
        if not math.isfinite(v) or v > 0.1:
            raise ValueError(f"{v} makes no sense for AdamW fine-tuning (papers use 2e-6 to 2e-4); at most 0.1")
        return v

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill in the preset's values for the fields the input does not set (model_fields_set)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("packing"), bool):  # the first version of this spec had a bool
            data["packing"] = "auto" if data["packing"] else "off"
        preset = data.get("preset", "none")
        values = dict(_PRESETS.get(preset, {}) if isinstance(preset, str) else {})
        effective = values.pop("_effective_batch", None)
        if effective is not None and "grad_accum" not in data:
            gpus = data.get("gpus") or 1
            per_device = data.get("per_device_batch", values.get("per_device_batch", 1))
            if isinstance(gpus, int) and isinstance(per_device, int) and gpus > 0 and per_device > 0:
                values["grad_accum"] = max(1, effective // (per_device * gpus))
        for key, value in values.items():
            if key == "lora" and isinstance(data.get("lora"), dict):
                data["lora"] = {**value, **data["lora"]}  # a partly given lora block keeps the preset's rest
            elif key not in data:
                data[key] = value
        # Field names of the records each method reads, unless the dataset block names them.
        method = data.get("method", "sft")
        wanted = _METHOD_FIELDS.get(method) if data.get("transform", "none") == "none" else None
        for ds_key in ("dataset", "validation"):
            ds = data.get(ds_key)
            if wanted and ds is not None:
                ds = {"path": ds} if isinstance(ds, (str, list)) else ds
                if isinstance(ds, dict):
                    data[ds_key] = {**wanted, **ds}
        return data

    @model_validator(mode="after")
    def _checks(self) -> FinetuneSpec:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("warmup: give warmup_steps or warmup_ratio, not both")
        if self.max_steps is not None and self.warmup_steps is not None and self.warmup_steps >= self.max_steps:
            raise ValueError(f"warmup_steps: {self.warmup_steps} warmup steps leave nothing of max_steps {self.max_steps}")
        effective = self.per_device_batch * self.grad_accum * max(1, self.gpus)
        if effective > 65536:
            raise ValueError(f"grad_accum: an effective batch of {effective} records per step makes no sense")
        if self.method == "calibration":
            if self.calibration_style == "probe" and self.lora is not None:
                raise ValueError("lora: the probe trains only a head on frozen features; remove lora or pick calibration_style lora/lora_prompt")
            if self.calibration_style != "probe" and self.lora is None:
                self.lora = LoraConfig(r=8, alpha=32, dropout=0.1)
        elif "calibration_style" in self.model_fields_set and self.calibration_style != "lora_prompt":
            raise ValueError("calibration_style: only for method calibration")
        if self.transform == "secalign" and self.method != "dpo":
            raise ValueError("transform: secalign builds preference pairs; it needs method dpo")
        if self.transform in ("struq", "bon_to_sft") and self.method != "sft":
            raise ValueError(f"transform: {self.transform} builds SFT records; it needs method sft")
        if self.injection_reference is not None and self.transform not in ("struq", "secalign"):
            raise ValueError("injection_reference: only for transform struq or secalign")
        if self.transform in ("struq", "secalign") and self.template != "struq":
            raise ValueError(f"template: transform {self.transform} formats with the StruQ delimiters; set template: struq")
        if self.reference is not None and self.method != "dpo":
            raise ValueError("reference: only DPO uses a reference model")
        if self.merge_lora and self.lora is None:
            raise ValueError("merge_lora: needs lora")
        if self.resume_from is not None and not self.resume_from.strip():
            raise ValueError("resume_from: 'auto', 'latest', a checkpoint path, or null")
        return self
