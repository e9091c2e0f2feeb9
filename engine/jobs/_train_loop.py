"""The training loop every finetune method shares, written on accelerate, with its setup and save.

Besides `TrainLoop`: the batch and schedule checks that refuse a plan the data cannot fill,
the `Accelerator` (mixed precision, DDP/FSDP), and `save_model`, which writes the result into a
temporary folder renamed when complete. SFT and DPO (finetune.py) and calibration tuning
(calibration.py) all use them, so neither job module imports the other's internals.

Why a hand loop rather than transformers' Trainer or TRL: the three methods differ only in their
loss module and collate function; everything else (AdamW, schedule, gradient accumulation
normalised by the step's real trained-token count, clipping, checkpoints, resume at the same
step with the same data order, live events, OOM halving) is written once here. `Accelerator`
handles the device, bf16 autocast and DDP/FSDP wrapping, so the same loop runs single-process on a
CPU and under torchrun on several GPUs.

Loss normalisation: a method's module returns the *sum* of its per-item losses over a micro-batch;
the loop divides by the step's normaliser (`Plan.step_norm`: trained tokens for SFT, pairs for DPO,
records for calibration, summed over all ranks and micro-batches) and multiplies by the world size
(DDP averages gradients over ranks). A step's gradient is therefore the mean over every trained
token of the step however the step is split into micro-batches or ranks, which is what makes OOM
halving exact and is the fix transformers adopted for gradient accumulation in 4.46.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.jobs import _checkpoint
from engine.jobs._common import JobInputError, hold_point, is_cuda_oom
from engine.jobs._train_data import Plan, micro_batches
from engine.specs import FinetuneSpec

# Test and demo aid: sleep this long after every optimizer step, so a kill can land mid-run.
STEP_DELAY_ENV = "LABDECK_STEP_DELAY_S"


class RankReporter:
    """Pass events through on the main process only, so N ranks do not write N copies."""

    def __init__(self, reporter: Any, is_main: bool) -> None:
        self._r = reporter
        self._main = is_main

    def __getattr__(self, name: str) -> Callable[..., None]:
        fn = getattr(self._r, name)
        return fn if self._main else (lambda *a, **k: None)


@dataclass
class LoopState:
    step: int = 0  # optimizer steps completed
    micro_batch: int = 1
    tokens: int = 0  # real tokens processed since start (this process's run, all ranks)
    seconds: float = 0.0
    last_loss: float | None = None
    history: list[float] = field(default_factory=list)


def reseed(seed: int, step: int, rank: int) -> None:
    """RNG state as a function of (seed, step, rank): resumed steps draw the same dropout masks."""
    import random

    import numpy as np
    import torch

    s = (seed * 1_000_003 + step * 64 + rank) % (2**31 - 1)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def peak_memory_gb(device_type: str) -> float:
    import torch

    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB (process peak RSS)


class TrainLoop:
    """Run optimizer steps `state.step .. plan.total_steps` of a prepared module."""

    def __init__(self, *, accelerator: Any, module: Any, optimizer: Any, scheduler: Any, plan: Plan,
                 collate: Callable[[list[int]], dict[str, Any]], events: Any, spec: Any, spec_dump: dict[str, Any],
                 checkpoint_root: Path, flops_per_token: float | None = None, peak_flops: float | None = None) -> None:
        self.acc = accelerator
        self.module = module
        self.opt = optimizer
        self.sched = scheduler
        self.plan = plan
        self.collate = collate
        self.events = events
        self.spec = spec
        self.spec_dump = spec_dump
        self.ckpt_root = checkpoint_root
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.state = LoopState(micro_batch=spec.per_device_batch)
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.delay = float(os.environ.get(STEP_DELAY_ENV, "0") or 0)

    # ---------------------------------------------------------------------------------------- steps

    def _micro_step(self, indices: list[int], norm: float, sync: bool) -> tuple[Any, dict[str, float], int]:
        batch = self.collate(indices)
        n_real = batch.pop("n_real_tokens")
        ctx = contextlib.nullcontext() if sync else self.acc.no_sync(self.module)
        with ctx:
            with self.acc.autocast():
                out = self.module(**batch)
            loss = out["loss_sum"] * (self.acc.num_processes / norm)
            self.acc.backward(loss)
        stats = {k: float(v) for k, v in out.get("stats", {}).items()}
        return out["loss_sum"].detach().float(), stats, n_real

    def _run_step(self, step: int) -> dict[str, float]:
        import torch

        rank = self.acc.process_index
        indices = self.plan.step_examples(step, rank)
        norm = self.plan.step_norm(step)
        while True:
            try:
                chunks = micro_batches(indices, self.state.micro_batch)
                loss_sum = torch.zeros((), device=self.acc.device)
                stats: dict[str, float] = {}
                n_real = 0
                for j, chunk in enumerate(chunks):
                    ls, st, nr = self._micro_step(chunk, norm, sync=j == len(chunks) - 1)
                    loss_sum += ls
                    n_real += nr
                    for k, v in st.items():
                        stats[k] = stats.get(k, 0.0) + v
                break
            except Exception as e:  # noqa: BLE001 - only CUDA OOM is handled, the rest re-raised
                if not (self.spec.oom_retry and is_cuda_oom(e)) or self.state.micro_batch == 1:
                    raise
                self.opt.zero_grad(set_to_none=True)
                del e
                torch.cuda.empty_cache()
                old = self.state.micro_batch
                self.state.micro_batch = max(1, old // 2)
                accum = -(-len(indices) // self.state.micro_batch)
                self.events.info(f"cuda_oom at step {step + 1}: micro-batch {old} -> {self.state.micro_batch}, "
                                 f"accumulation -> {accum} (same examples per step); retrying the step",
                                 oom_retry=True, step=step + 1, micro_batch=self.state.micro_batch, grad_accum=accum)
        grad_norm = self.acc.clip_grad_norm_(self.params, self.spec.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        packed = torch.tensor([float(loss_sum), float(n_real), *stats.values()], device=self.acc.device, dtype=torch.float64)
        if self.acc.num_processes > 1:
            packed = self.acc.reduce(packed, reduction="sum")
        values = packed.tolist()
        out = {"loss": values[0] / norm, "tokens": values[1]}
        for k, v in zip(stats, values[2:], strict=True):
            out[k] = v / norm
        out["grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        return out

    # ------------------------------------------------------------------------------------------ run

    def run(self, start_step: int = 0) -> LoopState:
        total = self.plan.total_steps
        st = self.state
        st.step = start_step
        device_type = self.acc.device.type
        self.module.train()
        self.events.progress(start_step, total, unit="steps")
        t_start = time.perf_counter()
        while st.step < total:
            step = st.step
            reseed(self.spec.seed, step, self.acc.process_index)
            lr = self.sched.get_last_lr()[0]
            t0 = time.perf_counter()
            res = self._run_step(step)
            if device_type == "cuda":
                import torch

                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            st.step = step + 1
            st.tokens += int(res["tokens"])
            st.seconds = time.perf_counter() - t_start
            st.last_loss = res["loss"]
            st.history.append(res["loss"])
            tps = res["tokens"] / dt if dt > 0 else 0.0
            metrics = {"loss": res["loss"], "learning_rate": lr, "grad_norm": res["grad_norm"],
                       "tokens_per_s": tps, "step_time_s": dt, "peak_mem_gb": peak_memory_gb(device_type),
                       "epoch": self.plan.epoch_of(st.step)}
            if self.flops_per_token and self.peak_flops:
                metrics["mfu"] = tps * self.flops_per_token / self.peak_flops
            for k, v in res.items():
                if k not in ("loss", "tokens", "grad_norm"):
                    metrics[k] = v
            self.events.metrics(metrics, step=st.step)
            self.events.progress(st.step, total, unit="steps")
            every = self.spec.checkpoint_every
            if every and st.step % every == 0 and st.step < total:
                self.save_checkpoint()
            if self.delay:
                time.sleep(self.delay)
            hold_point(st.step)
        return st

    def save_checkpoint(self) -> Path:
        st = self.state
        path = _checkpoint.save(self.ckpt_root, st.step, self.module, self.opt, self.sched, self.acc, self.spec_dump,
                                {"micro_batch": st.micro_batch, "total_steps": self.plan.total_steps,
                                 "loss": st.last_loss, "epoch": self.plan.epoch_of(st.step)},
                                self.spec.keep_last)
        self.events.info(f"checkpoint at step {st.step}", checkpoint=str(path), step=st.step)
        return path


# ------------------------------------------------------------------ setup and save, shared by every method


def check_batch(spec: FinetuneSpec, n: int, world: int, what: str) -> None:
    """Refuse a batch the data cannot fill, before any model is loaded."""
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


def to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
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
