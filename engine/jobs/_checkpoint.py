"""Resumable checkpoints of a finetune run: RUN_DIR/checkpoints/step-NNNNNNN/.

A checkpoint holds what it takes to continue at the same step with the same data order:

- `trainable.safetensors`: the trainable parameters only (all weights for full fine-tuning, the
  adapters and heads for LoRA/calibration), so a LoRA checkpoint of a 7B model is megabytes;
- `optimizer.pt`, `scheduler.pt`: their state dicts, read back with `torch.load(weights_only=True)`;
- `trainer_state.json`: the step, the micro-batch in use (after OOM halving), and the run's
  *training fingerprint*, a hash of every spec field that shapes the trajectory (model, data,
  method, hyper-parameters, seed, GPU count). A checkpoint whose fingerprint differs belongs to
  another run and is refused with one line naming the fields that differ.

The data order needs no saved state: `Plan` derives each step's examples from (seed, epoch,
step), and the training loop reseeds torch from (seed, step, rank) before every step, so dropout
masks after a resume are the ones the uninterrupted run drew. Under FSDP the model and optimizer
shards go through `accelerator.save_state` / `load_state` instead.

A checkpoint is written into `.partial-step-N` and renamed when complete, so a crash mid-save
leaves no half checkpoint that a resume could pick; older ones beyond `keep_last` are deleted only
after the new one is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from engine.jobs._common import JobInputError

STATE_FILE = "trainer_state.json"
FORMAT = 1
_STEP_RE = re.compile(r"^step-(\d+)$")

# Spec fields that do not change what the model sees or how it is updated.
_NOT_TRAJECTORY = {
    "experiment", "name", "description", "min_free_mem_gb", "share_gpu_mem_gb", "allow_foreign", "priority",
    "time_limit", "retry", "after", "checkpoint_every", "keep_last", "resume_from", "oom_retry", "merge_lora",
    "temperature_scaling", "slurm",
}


def trajectory_spec(spec_dump: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(spec_dump.items()) if k not in _NOT_TRAJECTORY}


def fingerprint(spec_dump: dict[str, Any]) -> str:
    blob = json.dumps(trajectory_spec(spec_dump), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def resolve_resume(resume_from: str | None, own_root: Path, spec_dump: dict[str, Any]) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint folder to continue from (or None) and its state; one-line JobInputError otherwise."""
    own = list_checkpoints(own_root)
    if resume_from is None:
        if own:
            raise JobInputError(f"this run already has checkpoints up to step {own[-1][0]} in {own_root}; "
                                "set resume_from: auto to continue it, or start a new job")
        return None, None
    if resume_from in ("auto", "latest"):
        if not own:
            if resume_from == "latest":
                raise JobInputError(f"resume_from latest: this run has no checkpoint in {own_root}")
            return None, None
        path = own[-1][1]
    else:
        p = Path(resume_from).expanduser()
        if (p / STATE_FILE).is_file():
            path = p
        else:
            cands = list_checkpoints(p) or list_checkpoints(p / "checkpoints")
            if not cands:
                raise JobInputError(f"resume_from {resume_from}: not a checkpoint folder, nor a folder holding step-N checkpoints")
            path = cands[-1][1]
    state = read_state(path)
    mine = fingerprint(spec_dump)
    if state.get("fingerprint") != mine:
        theirs = state.get("trajectory_spec") or {}
        ours = trajectory_spec(spec_dump)
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise JobInputError(f"resume_from {path}: a checkpoint of another run (its training spec differs in: "
                            f"{', '.join(diff[:6]) or 'format'}); refusing to continue from it")
    return path, state


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JobInputError(f"resume_from {path}: unreadable {STATE_FILE} ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("step"), int):
        raise JobInputError(f"resume_from {path}: not a labdeck finetune checkpoint")
    return state


def clean_partial(root: Path) -> None:
    """Remove half-written checkpoints a killed run left behind."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".partial-"):
                shutil.rmtree(p, ignore_errors=True)


def save(root: Path, step: int, module: Any, optimizer: Any, scheduler: Any, accelerator: Any,
         spec_dump: dict[str, Any], extra: dict[str, Any], keep_last: int) -> Path:
    """Write checkpoint `step` atomically and prune to `keep_last`. Call on every rank."""
    import torch
    from safetensors.torch import save_file

    final = root / f"step-{step:07d}"
    tmp = root / f".partial-step-{step:07d}"
    is_main = accelerator.is_main_process
    fsdp = _is_fsdp(accelerator)
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    if fsdp:
        accelerator.save_state(str(tmp / "accelerate"))
    elif is_main:
        inner = accelerator.unwrap_model(module)
        tensors = {n: p.detach().to("cpu").contiguous() for n, p in inner.named_parameters() if p.requires_grad}
        save_file(tensors, str(tmp / "trainable.safetensors"), metadata={"format": "pt"})
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    if is_main:
        state = {"format": FORMAT, "step": step, "fingerprint": fingerprint(spec_dump),
                 "trajectory_spec": trajectory_spec(spec_dump), "time": time.time(), **extra}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, final)
        for _, old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(path: Path, module: Any, optimizer: Any, scheduler: Any, accelerator: Any) -> None:
    """Restore trainable weights, optimizer and scheduler from a checkpoint written by `save`."""
    import torch
    from safetensors.torch import load_file

    if _is_fsdp(accelerator):
        accelerator.load_state(str(path / "accelerate"))
        return
    inner = accelerator.unwrap_model(module)
    tensors = load_file(str(path / "trainable.safetensors"))
    trainable = {n for n, p in inner.named_parameters() if p.requires_grad}
    if set(tensors) != trainable:
        missing = sorted(trainable - set(tensors))[:3]
        raise JobInputError(f"resume_from {path}: its weights do not match this model (missing e.g. {missing})")
    params = dict(inner.named_parameters())
    with torch.no_grad():
        for n, t in tensors.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True))


def _is_fsdp(accelerator: Any) -> bool:
    return str(getattr(accelerator, "distributed_type", "")).upper().endswith("FSDP")
