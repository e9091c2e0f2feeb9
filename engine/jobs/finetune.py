"""The `finetune` job: SFT (full or LoRA), DPO and calibration tuning (science.md §6, §9, §10.3).

Order of work, so that bad input costs nothing and overwrites nothing (issue 5, item 7):

1. Checks that need no torch: the model folders exist and hold safetensors, outputs/model does not
   exist yet, the resume folder (if any) is a checkpoint of *this* training spec, the dataset
   reads and has the needed fields, the transform runs.
2. Tokenise (tokenizer only), build the step plan, and refuse a batch or warmup that makes no
   sense for the data (an effective batch larger than the dataset, warmup as long as training).
3. Only then load the model, train (`_train_loop.TrainLoop`), and save the result into a
   temporary folder renamed to outputs/model when complete, recorded as a `model` artifact.

Several GPUs (`gpus > 1`): the job re-launches itself under `torch.distributed.run` with one
process per visible GPU; accelerate's `Accelerator` then wraps the model in DDP or FSDP, and only
rank 0 writes events and files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.jobs import _checkpoint
from engine.jobs._common import JobContext, JobInputError
from engine.jobs._stopping import add_end_of_turn
from engine.jobs._train_data import (
    Example,
    Plan,
    TokenStats,
    apply_transform,
    dpo_texts,
    pack_batch,
    pad_batch,
    read_records,
    reference_responses,
    require_fields,
    sft_segments,
    tokenize_many,
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


# ------------------------------------------------------------------------------------ cheap checks


def prepare(spec: FinetuneSpec, ctx: JobContext) -> Prepared:
    from engine.jobs._train_model import check_model_ref

    check_model_ref(spec.model)
    if spec.reference is not None:
        check_model_ref(spec.reference, "reference")
    out_model = ctx.run_dir / "outputs" / "model"
    if out_model.exists():
        raise JobInputError(f"{out_model} already exists: this run has finished; nothing was overwritten")
    spec_dump = dump_spec(spec)
    root = ctx.run_dir / "checkpoints"
    resume_path, resume_state = _checkpoint.resolve_resume(spec.resume_from, root, spec_dump)
    records = read_records(spec.dataset)
    ds = spec.dataset
    if spec.transform == "none":
        if spec.method == "dpo":
            need = [spec.chosen_field, spec.rejected_field] + ([] if ds.messages_field else [ds.instruction_field])
        elif spec.method == "calibration":
            need = [ds.instruction_field, ds.output_field, spec.label_field]
        else:
            need = [ds.messages_field] if ds.messages_field else [ds.instruction_field, ds.output_field]
        require_fields(records, need, f"method {spec.method}")
    return Prepared(spec, spec_dump, records, resume_path, resume_state, root, out_model)


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


# --------------------------------------------------------------------------------------- SFT / DPO


class SFTLoss:
    """Summed cross-entropy over response tokens only (science.md §0); the loop normalises it."""

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


def transformed_records(spec: FinetuneSpec, records: list[dict[str, Any]], eos: str) -> list[dict[str, Any]]:
    lookup = None
    if spec.injection_reference is not None:
        lookup = reference_responses(read_records(spec.injection_reference), spec.injection_reference)
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


def check_batch(spec: FinetuneSpec, n: int, world: int, what: str) -> None:
    """Refuse a batch the data cannot fill (issue 5, item 7)."""
    if n < spec.per_device_batch * world:
        raise JobInputError(f"per_device_batch: {spec.per_device_batch} x {world} device(s) needs at least "
                            f"{spec.per_device_batch * world} {what}, the data has {n}")
    effective = spec.per_device_batch * spec.grad_accum * world
    if effective > n:
        raise JobInputError(f"grad_accum: an effective batch of {effective} {what} per step is larger than the "
                            f"{n} {what} of the dataset; lower per_device_batch or grad_accum")


def check_schedule(spec: FinetuneSpec, plan: Plan) -> None:
    from engine.jobs._optim import warmup_steps

    w = warmup_steps(spec, plan.total_steps)
    if w >= plan.total_steps and spec.lr_scheduler != "constant":
        raise JobInputError(f"warmup_steps: {w} warmup steps but only {plan.total_steps} optimizer steps "
                            f"({plan.steps_per_epoch} per epoch); the learning rate would never decay")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_accelerator(spec: FinetuneSpec, model: Any | None, weights_dtype: Any) -> Any:
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    # bf16 autocast on a GPU: over fp32 master weights (full fine-tuning) or a bf16 frozen base (LoRA,
    # whose fp32 adapters then also run their matmuls in bf16). fp16 weights are taken as given.
    bf16 = cuda and weights_dtype in (torch.float32, torch.bfloat16) and torch.cuda.is_bf16_supported()
    mp = "bf16" if bf16 else "no"
    kwargs: dict[str, Any] = {"mixed_precision": mp, "cpu": not cuda}
    if spec.distributed == "fsdp" and world_size() > 1:
        from accelerate import FullyShardedDataParallelPlugin

        layers = list(getattr(model, "_no_split_modules", None) or [])
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            sharding_strategy="FULL_SHARD", auto_wrap_policy="transformer_based_wrap",
            transformer_cls_names_to_wrap=layers, use_orig_params=True, state_dict_type="SHARDED_STATE_DICT",
        )
    return Accelerator(**kwargs)


def train_lm(prep: Prepared, ctx: JobContext) -> None:
    """SFT or DPO: tokenise, plan, load, train, save."""
    import torch
    from transformers.utils import logging as hf_logging

    from engine.jobs import _optim, _train_model
    from engine.jobs._train_loop import RankReporter, TrainLoop

    hf_logging.disable_progress_bar()
    spec = prep.spec
    world = world_size()
    is_main = int(os.environ.get("RANK", "0")) == 0
    events = RankReporter(ctx.events, is_main)
    tokenizer = _train_model.load_tokenizer(spec.model)

    new_tokens = None
    if spec.template == "struq":
        from engine.data import injection

        new_tokens = _train_model.add_delimiter_tokens(tokenizer, injection.SPECIAL_TOKEN_INIT_TEXT, injection.PAD_TOKEN)
    records = transformed_records(spec, prep.records, tokenizer.eos_token)
    if spec.method == "dpo":
        pairs, stats = tokenize_dpo(spec, records, tokenizer, preformatted=spec.transform == "secalign")
        n, what = len(pairs), "pairs"
        lengths = [len(c) + len(r) for c, r in pairs]
        weights = [1.0] * n
    else:
        examples, stats = tokenize_sft(spec, records, tokenizer)
        n, what = len(examples), "records"
        lengths = [len(e) for e in examples]
        weights = [float(e.n_trained) for e in examples]
    if n == 0:
        raise JobInputError(f"dataset: no usable {what} after tokenising ({stats.message(what)})")
    check_batch(spec, n, world, what)

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    attn = _train_model.pick_attention(spec.attn_implementation, device_type)
    packed = spec.method == "sft" and (spec.packing == "on" or (spec.packing == "auto" and attn in FLASH))
    micro = spec.per_device_batch
    if prep.resume_state and int(prep.resume_state.get("micro_batch", micro)) < micro:
        micro = int(prep.resume_state["micro_batch"])
    plan = Plan(lengths=lengths, weights=weights, seed=spec.seed, micro_batch=spec.per_device_batch,
                grad_accum=spec.grad_accum, world=world, epochs=spec.epochs, max_steps=spec.max_steps,
                group_by_length=not packed)
    check_schedule(spec, plan)
    start = int(prep.resume_state["step"]) if prep.resume_state else 0
    if start > plan.total_steps:
        raise JobInputError(f"resume_from {prep.resume_path}: its step {start} is past this run's {plan.total_steps} steps")

    events.info(stats.message(what), records=stats.total, truncated=stats.truncated, dropped=stats.dropped)
    path_msg = (f"padding-free packing ({attn}: sequence boundaries from position_ids)" if packed else
                f"length-grouped padded batches ({attn}{'; packing needs flash-attention varlen' if spec.packing == 'auto' and spec.method == 'sft' else ''})")
    events.info(f"data path: {path_msg}", data_path="packed" if packed else "length_grouped", attn_implementation=attn)
    if new_tokens and new_tokens.added:
        events.info(f"added tokens {' '.join(new_tokens.added)}, embeddings initialised as science.md §9.1",
                    added_tokens=new_tokens.added)

    # ---- model
    lora = spec.lora is not None
    dtype = _train_model.load_dtype(spec.model, device_type, lora)
    torch.manual_seed(spec.seed)  # LoRA's A matrices and any new rows are drawn here: the seed decides them
    model = _train_model.load_causal_lm(spec.model, dtype, attn)
    save_dtype = _train_model.source_dtype(model)
    if new_tokens:
        _train_model.init_new_embeddings(model, tokenizer, new_tokens)
    if spec.gradient_checkpointing:
        _train_model.enable_gradient_checkpointing(model)
    if lora:
        model = _train_model.apply_lora(model, spec.lora, spec.gradient_checkpointing)
    reference = None
    if spec.method == "dpo":
        from engine.jobs import dpo

        dpo.disable_dropout(model)
        if spec.reference is not None or not lora:
            ref_ref = spec.reference or spec.model
            reference = _train_model.load_causal_lm(ref_ref, _train_model.load_dtype(ref_ref, device_type, lora=True), attn)
            if new_tokens and spec.reference is None:
                _train_model.init_new_embeddings(reference, tokenizer, new_tokens)
            elif len(tokenizer) > reference.get_input_embeddings().weight.shape[0]:
                raise JobInputError(f"reference {ref_ref.path}: its vocabulary is smaller than the tokenizer's")
        module = dpo.DPOLoss.build(model, reference, spec.dpo_beta)
    else:
        module = SFTLoss.build(model)

    accelerator = make_accelerator(spec, model, dtype)
    if world > 1:
        parallel = "FSDP" if _checkpoint._is_fsdp(accelerator) else "DDP"
        events.info(f"data parallel: {parallel} over {world} processes ({accelerator.mixed_precision} mixed precision)",
                    parallel=parallel)
    optimizer = _optim.build_optimizer(module, spec, device_type)
    module, optimizer = accelerator.prepare(module, optimizer)
    if reference is not None:
        reference.to(accelerator.device).eval().requires_grad_(False)
    scheduler = _optim.build_scheduler(optimizer, spec, plan.total_steps)
    if prep.resume_path is not None:
        _checkpoint.load(prep.resume_path, module, optimizer, scheduler, accelerator)
        events.info(f"resumed from {prep.resume_path} at step {start} of {plan.total_steps}", resumed_step=start,
                    checkpoint=str(prep.resume_path))
    if is_main:
        _checkpoint.clean_partial(prep.checkpoint_root)

    pad_id = tokenizer.pad_token_id
    flash = attn in FLASH
    if spec.method == "dpo":
        def collate(idx: list[int]) -> dict[str, Any]:
            seqs = [pairs[i][0] for i in idx] + [pairs[i][1] for i in idx]
            batch = pad_batch(seqs, pad_id)
            batch["n_pairs"] = len(idx)
            return _to(batch, accelerator.device)
    elif packed:
        def collate(idx: list[int]) -> dict[str, Any]:
            return _to(pack_batch([examples[i] for i in idx], flash_kwargs=flash), accelerator.device)
    else:
        def collate(idx: list[int]) -> dict[str, Any]:
            return _to(pad_batch([examples[i] for i in idx], pad_id), accelerator.device)

    fpt, peak = None, None
    if device_type == "cuda":
        shape = _optim.model_shape(accelerator.unwrap_model(module).model.config)
        mean_len = sum(lengths) / len(lengths) / (2 if spec.method == "dpo" else 1)
        fpt = _optim.flops_per_token(_optim.matmul_params(accelerator.unwrap_model(module).model), shape, mean_len, lora)
        peak = _optim.device_peak_flops(torch.cuda.get_device_name())
    loop = TrainLoop(accelerator=accelerator, module=module, optimizer=optimizer, scheduler=scheduler, plan=plan,
                     collate=collate, events=events, spec=spec, spec_dump=prep.spec_dump,
                     checkpoint_root=prep.checkpoint_root, flops_per_token=fpt, peak_flops=peak)
    loop.state.micro_batch = micro
    state = loop.run(start)

    inner = accelerator.unwrap_model(module).model
    state_dict = accelerator.get_state_dict(module) if _checkpoint._is_fsdp(accelerator) else None
    # trained to close its turn with the template's end-of-turn token: stop there, not only at the base eos
    stops = add_end_of_turn(inner, tokenizer) if spec.template == "chat" else None
    fmt = save_model(inner, tokenizer, prep.out_model, lora=lora, merge=spec.merge_lora or bool(new_tokens and new_tokens.added),
                     dtype=save_dtype, is_main=accelerator.is_main_process, state_dict=state_dict,
                     info={"method": spec.method, "steps": state.step, "final_loss": state.last_loss,
                           "fingerprint": _checkpoint.fingerprint(prep.spec_dump), "base_model": spec.model.path,
                           "stop_token_ids": stops})
    accelerator.wait_for_everyone()
    if state.seconds > 0 and state.step > start:
        events.metrics({"train_tokens_per_s": state.tokens / state.seconds, "train_seconds": state.seconds})
    if state.last_loss is not None:
        events.metric("final_loss", state.last_loss)
    events.artifact("model", "outputs/model", format=fmt, method=spec.method, steps=state.step,
                    dtype=str(save_dtype).removeprefix("torch."), base_model=spec.model.path)


def _to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in batch.items()}


def save_model(model: Any, tokenizer: Any, out: Path, *, lora: bool, merge: bool, dtype: Any, is_main: bool,
               state_dict: dict[str, Any] | None, info: dict[str, Any]) -> str:
    """Write the final model (or adapter) with its tokenizer into a temp folder, then rename it to `out`.

    Full weights are cast back to the starting checkpoint's dtype (fp32 master weights of a bf16
    model are saved as bf16). A LoRA run whose vocabulary grew (StruQ delimiters) is saved merged,
    since the adapter alone cannot carry the new embedding rows.
    """
    fmt = "adapter" if lora and not merge else "full"
    if not is_main:
        return fmt
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if state_dict is not None:
        state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
    if lora and merge:
        model = model.merge_and_unload()
    if fmt == "full":
        model = model.to(dtype)
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "labdeck_training.json").write_text(json.dumps({**info, "format": fmt}, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, out)
    return fmt
