"""The `finetune` job: SFT (full or LoRA), DPO and calibration tuning (docs/science.md §6, §9, §10.3).

This module reads top to bottom in the order the job works, so that bad input costs nothing and
overwrites nothing:

1. **Setup** (`prepare`), checks that need no torch: the model folders or hub ids resolve, the
   output model does not exist yet, the resume folder (if any) is a checkpoint of *this* training
   spec, the dataset reads (`_loading.read_dataset`, the reader every job shares) and has the
   fields the method needs. Calibration tuning then continues in calibration.py.
2. **Method** (`method_data`, `build_module`): tokenise (tokenizer only), refuse a batch or warmup
   that makes no sense for the data, then load the model and wrap it in the method's loss module
   (SFT: `SFTLoss`; DPO: `dpo.DPOLoss`).
3. **Loop**: `_train_loop.TrainLoop` (shared with calibration tuning), with checkpoints and exact resume.
4. **Save**: into a temporary folder renamed to outputs/model when complete, recorded as a `model`
   artifact.

Several GPUs (`gpus > 1`): the job re-launches itself under `torch.distributed.run` with one
process per visible GPU; accelerate's `Accelerator` then wraps the model in DDP or FSDP, and only
rank 0 writes events and files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.jobs import _checkpoint
from engine.jobs._common import JobContext, JobInputError
from engine.jobs._loading import check_model_path, read_dataset
from engine.jobs._stopping import add_end_of_turn
from engine.jobs._train_data import (
    Example,
    Plan,
    TokenStats,
    apply_transform,
    dpo_texts,
    need,
    pack_batch,
    pad_batch,
    reference_responses,
    sft_segments,
    tokenize_many,
)
from engine.jobs._train_loop import (
    check_batch,
    check_schedule,
    make_accelerator,
    save_model,
    to_device,
    world_size,
)
from engine.specs import DatasetRef, FinetuneSpec, dump_spec

FLASH = ("flash_attention_2", "flash_attention_3")


@dataclass
class Prepared:
    """What the cheap checks produced, handed to the method's training code."""

    spec: FinetuneSpec
    spec_dump: dict[str, Any]
    records: list[dict[str, Any]]
    resume_path: Path | None
    resume_state: dict[str, Any] | None
    checkpoint_root: Path
    out_model: Path
    info: dict[str, Any] = field(default_factory=dict)


def run(spec: FinetuneSpec, ctx: JobContext) -> None:
    prep = prepare(spec, ctx)
    if _wants_launcher(spec):
        return _launch_distributed(spec, ctx)
    if spec.method == "calibration":
        from engine.jobs import calibration

        return calibration.train(prep, ctx)
    return train_lm(prep, ctx)


# ------------------------------------------------------------------------------------------ 1. setup


def prepare(spec: FinetuneSpec, ctx: JobContext) -> Prepared:
    check_model_path(spec.model)
    if spec.reference is not None:
        check_model_path(spec.reference, "reference")
    out_model = ctx.run_dir / "outputs" / "model"
    if out_model.exists():
        raise JobInputError(f"{out_model} already exists: this run has finished; nothing was overwritten")
    spec_dump = dump_spec(spec)
    root = ctx.run_dir / "checkpoints"
    resume_path, resume_state = _checkpoint.resolve_resume(spec.resume_from, root, spec_dump)
    records = read_dataset(spec.dataset)
    if spec.transform == "none":
        need(records, _method_fields(spec), spec.dataset)
    return Prepared(spec, spec_dump, records, resume_path, resume_state, root, out_model)


def _method_fields(spec: FinetuneSpec) -> dict[str, str | None]:
    """The spec option -> record field map the method reads (each named in the error if missing)."""
    ds = spec.dataset
    prompt = {"dataset.messages_field": ds.messages_field} if ds.messages_field else {
        "dataset.instruction_field": ds.instruction_field}
    if spec.method == "dpo":
        return {"chosen_field": spec.chosen_field, "rejected_field": spec.rejected_field, **prompt}
    if spec.method == "calibration":
        return {"dataset.instruction_field": ds.instruction_field, "dataset.output_field": ds.output_field,
                "label_field": spec.label_field}
    return prompt if ds.messages_field else {**prompt, "dataset.output_field": ds.output_field}


def _wants_launcher(spec: FinetuneSpec) -> bool:
    if spec.gpus <= 1 or "LOCAL_RANK" in os.environ:
        return False
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 1


def _launch_distributed(spec: FinetuneSpec, ctx: JobContext) -> None:
    import torch

    n = min(spec.gpus, torch.cuda.device_count())
    ctx.events.info(f"starting {n} training processes with torchrun ({spec.distributed})", processes=n)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "engine.jobs", str(ctx.run_dir)]
    rc = subprocess.call(cmd)  # argument list, no shell; the children inherit the environment
    if rc == 4:
        raise RuntimeError("CUDA out of memory in a training process")
    if rc == 3:
        raise JobInputError("a training process refused its input (see its error event)")
    if rc != 0:
        raise RuntimeError(f"a training process failed (torchrun exit status {rc})")


# -------------------------------------------------------------------------------- 2. method: data


def transformed_records(spec: FinetuneSpec, records: list[dict[str, Any]], eos: str) -> list[dict[str, Any]]:
    lookup = None
    if spec.injection_reference is not None:
        lookup = reference_responses(read_dataset(spec.injection_reference, "injection_reference"),
                                     spec.injection_reference)
    return apply_transform(spec.transform, records, spec.dataset, eos, spec.seed, lookup, spec.bon_select)


def record_fields(spec: FinetuneSpec) -> DatasetRef:
    """The field names of the records after the transform (bon_to_sft emits Alpaca names)."""
    if spec.transform == "bon_to_sft":
        return spec.dataset.model_copy(update=dict(instruction_field="instruction", input_field="input",
                                                   output_field="output", messages_field=None))
    return spec.dataset


def tokenize_sft(spec: FinetuneSpec, records: list[dict[str, Any]], tokenizer: Any) -> tuple[list[Example], TokenStats]:
    ref, pre = record_fields(spec), spec.transform == "struq"
    segs = [sft_segments(r, ref, spec.template, tokenizer, spec.system_prompt, pre) for r in records]
    stats = TokenStats(total=len(segs))
    examples = []
    for ex, cut in tokenize_many(tokenizer, segs, spec.max_seq_len, add_special_tokens=spec.template != "chat" or pre):
        stats.truncated += cut
        if ex.n_trained == 0:
            stats.dropped += 1
            continue
        examples.append(ex)
    return examples, stats


def tokenize_dpo(spec: FinetuneSpec, records: list[dict[str, Any]], tokenizer: Any,
                 preformatted: bool) -> tuple[list[tuple[Example, Example]], TokenStats]:
    chosen, rejected = [], []
    for r in records:
        c, rj = dpo_texts(r, spec.dataset, spec.template, tokenizer, spec.chosen_field, spec.rejected_field,
                          spec.system_prompt, preformatted)
        chosen.append(c)
        rejected.append(rj)
    add = spec.template != "chat" or preformatted
    tc = tokenize_many(tokenizer, chosen, spec.max_seq_len, add)
    tr = tokenize_many(tokenizer, rejected, spec.max_seq_len, add)
    stats = TokenStats(total=len(records))
    pairs = []
    for (c, cut_c), (rj, cut_r) in zip(tc, tr, strict=True):
        stats.truncated += bool(cut_c or cut_r)
        if c.n_trained == 0 or rj.n_trained == 0:
            stats.dropped += 1
            continue
        pairs.append((c, rj))
    return pairs, stats


@dataclass
class MethodData:
    """The tokenised training set of SFT (examples) or DPO (chosen/rejected pairs), with the plan's inputs."""

    what: str  # "records" or "pairs", as error lines and events name them
    stats: TokenStats
    examples: list[Example] = field(default_factory=list)
    pairs: list[tuple[Example, Example]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # per item: what a step's loss is normalised by

    @property
    def n(self) -> int:
        return len(self.pairs) if self.what == "pairs" else len(self.examples)


def method_data(spec: FinetuneSpec, records: list[dict[str, Any]], tokenizer: Any) -> MethodData:
    """Transform and tokenise the records for the method; refuse data that leaves nothing to train on."""
    records = transformed_records(spec, records, tokenizer.eos_token)
    if spec.method == "dpo":
        pairs, stats = tokenize_dpo(spec, records, tokenizer, preformatted=spec.transform == "secalign")
        data = MethodData("pairs", stats, pairs=pairs, lengths=[len(c) + len(r) for c, r in pairs],
                          weights=[1.0] * len(pairs))
    else:
        examples, stats = tokenize_sft(spec, records, tokenizer)
        data = MethodData("records", stats, examples=examples, lengths=[len(e) for e in examples],
                          weights=[float(e.n_trained) for e in examples])
    if data.n == 0:
        raise JobInputError(f"dataset: no usable {data.what} after tokenising ({stats.message(data.what)})")
    return data


# ------------------------------------------------------------------------- 2. method: model and loss


class SFTLoss:
    """Summed cross-entropy over response tokens only (docs/science.md §0); the loop normalises it."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        from engine.jobs._train_model import response_logits

        class _SFT(torch.nn.Module):
            def __init__(self, model: Any) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, labels: Any, **inputs: Any) -> dict[str, Any]:
                logits, targets, _ = response_logits(self.model, input_ids, labels, **inputs)
                return {"loss_sum": torch.nn.functional.cross_entropy(logits, targets, reduction="sum")}

        return _SFT(model)


@dataclass
class Built:
    module: Any  # the method's loss module around the policy
    reference: Any | None  # DPO's frozen reference model, when it is a separate copy
    dtype: Any  # the dtype the weights were loaded in
    save_dtype: Any  # the dtype the starting checkpoint was saved in, to save the result in


def build_module(spec: FinetuneSpec, tokenizer: Any, new_tokens: Any, device_type: str, attn: str) -> Built:
    """Load the policy (and DPO's reference), add LoRA and new token rows, and wrap it in the method's loss."""
    import torch

    from engine.jobs import _train_model
    from engine.jobs._loading import load_trainable_lm

    lora = spec.lora is not None
    dtype = _train_model.load_dtype(spec.model, device_type, lora)
    torch.manual_seed(spec.seed)  # LoRA's A matrices and any new rows are drawn here: the seed decides them
    model = load_trainable_lm(spec.model, dtype, attn)
    save_dtype = _train_model.source_dtype(model)
    if new_tokens:
        _train_model.init_new_embeddings(model, tokenizer, new_tokens)
    if spec.gradient_checkpointing:
        _train_model.enable_gradient_checkpointing(model)
    if lora:
        model = _train_model.apply_lora(model, spec.lora, spec.gradient_checkpointing)
    if spec.method != "dpo":
        return Built(SFTLoss.build(model), None, dtype, save_dtype)

    from engine.jobs import dpo

    dpo.disable_dropout(model)
    reference = None
    if spec.reference is not None or not lora:  # with LoRA alone, the reference is the model without its adapters
        ref_ref = spec.reference or spec.model
        what = "reference" if spec.reference is not None else "model"
        reference = load_trainable_lm(ref_ref, _train_model.load_dtype(ref_ref, device_type, lora=True), attn, what)
        if new_tokens and spec.reference is None:
            _train_model.init_new_embeddings(reference, tokenizer, new_tokens)
        elif len(tokenizer) > reference.get_input_embeddings().weight.shape[0]:
            raise JobInputError(f"reference {ref_ref.path}: its vocabulary is smaller than the tokenizer's")
    return Built(dpo.DPOLoss.build(model, reference, spec.dpo_beta), reference, dtype, save_dtype)


def make_collate(data: MethodData, pad_id: int, packed: bool, flash: bool, device: Any) -> Any:
    """index list -> the micro-batch on `device`: DPO's chosen-then-rejected rows, packed or padded SFT rows."""
    if data.what == "pairs":
        def collate(idx: list[int]) -> dict[str, Any]:
            seqs = [data.pairs[i][0] for i in idx] + [data.pairs[i][1] for i in idx]
            batch = pad_batch(seqs, pad_id)
            batch["n_pairs"] = len(idx)
            return to_device(batch, device)
    elif packed:
        def collate(idx: list[int]) -> dict[str, Any]:
            return to_device(pack_batch([data.examples[i] for i in idx], flash_kwargs=flash), device)
    else:
        def collate(idx: list[int]) -> dict[str, Any]:
            return to_device(pad_batch([data.examples[i] for i in idx], pad_id), device)
    return collate


# ------------------------------------------------------------------------------- 3. loop, 4. save


def train_lm(prep: Prepared, ctx: JobContext) -> None:
    """SFT or DPO: tokenise, plan, load, train, save."""
    import torch
    from transformers.utils import logging as hf_logging

    from engine.jobs import _optim, _train_model
    from engine.jobs._loading import load_tokenizer
    from engine.jobs._train_loop import RankReporter, TrainLoop

    hf_logging.disable_progress_bar()
    spec = prep.spec
    world = world_size()
    is_main = int(os.environ.get("RANK", "0")) == 0
    events = RankReporter(ctx.events, is_main)

    # ---- 2. method: data, plan
    tokenizer = load_tokenizer(spec.model, padding_side=None)
    new_tokens = None
    if spec.template == "struq":
        from engine.data import injection

        new_tokens = _train_model.add_delimiter_tokens(tokenizer, injection.SPECIAL_TOKEN_INIT_TEXT, injection.PAD_TOKEN)
    data = method_data(spec, prep.records, tokenizer)
    check_batch(spec, data.n, world, data.what)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    attn = _train_model.pick_attention(spec.attn_implementation, device_type)
    packed = spec.method == "sft" and (spec.packing == "on" or (spec.packing == "auto" and attn in FLASH))
    micro = spec.per_device_batch
    if prep.resume_state and int(prep.resume_state.get("micro_batch", micro)) < micro:
        micro = int(prep.resume_state["micro_batch"])
    plan = Plan(lengths=data.lengths, weights=data.weights, seed=spec.seed, micro_batch=spec.per_device_batch,
                grad_accum=spec.grad_accum, world=world, epochs=spec.epochs, max_steps=spec.max_steps,
                group_by_length=not packed)
    check_schedule(spec, plan)
    start = int(prep.resume_state["step"]) if prep.resume_state else 0
    if start > plan.total_steps:
        raise JobInputError(f"resume_from {prep.resume_path}: its step {start} is past this run's {plan.total_steps} steps")

    stats, what = data.stats, data.what
    events.info(stats.message(what), records=stats.total, truncated=stats.truncated, dropped=stats.dropped)
    path_msg = (f"padding-free packing ({attn}: sequence boundaries from position_ids)" if packed else
                f"length-grouped padded batches ({attn}{'; packing needs flash-attention varlen' if spec.packing == 'auto' and spec.method == 'sft' else ''})")
    events.info(f"data path: {path_msg}", data_path="packed" if packed else "length_grouped", attn_implementation=attn)
    if new_tokens and new_tokens.added:
        events.info(f"added tokens {' '.join(new_tokens.added)}, embeddings initialised from their textual "
                    "counterparts (docs/science.md §9.1)", added_tokens=new_tokens.added)

    # ---- 2. method: model and loss
    lora = spec.lora is not None
    built = build_module(spec, tokenizer, new_tokens, device_type, attn)

    # ---- 3. loop
    accelerator = make_accelerator(spec, built.module.model, built.dtype)
    if world > 1:
        parallel = "FSDP" if _checkpoint._is_fsdp(accelerator) else "DDP"
        events.info(f"data parallel: {parallel} over {world} processes ({accelerator.mixed_precision} mixed precision)",
                    parallel=parallel)
    optimizer = _optim.build_optimizer(built.module, spec, device_type)
    module, optimizer = accelerator.prepare(built.module, optimizer)
    if built.reference is not None:
        built.reference.to(accelerator.device).eval().requires_grad_(False)
    scheduler = _optim.build_scheduler(optimizer, spec, plan.total_steps)
    if prep.resume_path is not None:
        _checkpoint.load(prep.resume_path, module, optimizer, scheduler, accelerator)
        events.info(f"resumed from {prep.resume_path} at step {start} of {plan.total_steps}", resumed_step=start,
                    checkpoint=str(prep.resume_path))
    if is_main:
        _checkpoint.clean_partial(prep.checkpoint_root)

    collate = make_collate(data, tokenizer.pad_token_id, packed, attn in FLASH, accelerator.device)
    fpt, peak = None, None
    if device_type == "cuda":
        shape = _optim.model_shape(accelerator.unwrap_model(module).model.config)
        mean_len = sum(data.lengths) / len(data.lengths) / (2 if spec.method == "dpo" else 1)
        fpt = _optim.flops_per_token(_optim.matmul_params(accelerator.unwrap_model(module).model), shape, mean_len, lora)
        peak = _optim.device_peak_flops(torch.cuda.get_device_name())
    loop = TrainLoop(accelerator=accelerator, module=module, optimizer=optimizer, scheduler=scheduler, plan=plan,
                     collate=collate, events=events, spec=spec, spec_dump=prep.spec_dump,
                     checkpoint_root=prep.checkpoint_root, flops_per_token=fpt, peak_flops=peak)
    loop.state.micro_batch = micro
    state = loop.run(start)

    # ---- 4. save
    inner = accelerator.unwrap_model(module).model
    state_dict = accelerator.get_state_dict(module) if _checkpoint._is_fsdp(accelerator) else None
    # trained to close its turn with the template's end-of-turn token: stop there, not only at the base eos
    stops = add_end_of_turn(inner, tokenizer) if spec.template == "chat" else None
    fmt = save_model(inner, tokenizer, prep.out_model, lora=lora, merge=spec.merge_lora or bool(new_tokens and new_tokens.added),
                     dtype=built.save_dtype, is_main=accelerator.is_main_process, state_dict=state_dict,
                     info={"method": spec.method, "steps": state.step, "final_loss": state.last_loss,
                           "fingerprint": _checkpoint.fingerprint(prep.spec_dump), "base_model": spec.model.path,
                           "stop_token_ids": stops})
    accelerator.wait_for_everyone()
    if state.seconds > 0 and state.step > start:
        events.metrics({"train_tokens_per_s": state.tokens / state.seconds, "train_seconds": state.seconds})
    if state.last_loss is not None:
        events.metric("final_loss", state.last_loss)
    events.artifact("model", "outputs/model", format=fmt, method=spec.method, steps=state.step,
                    dtype=str(built.save_dtype).removeprefix("torch."), base_model=spec.model.path)
