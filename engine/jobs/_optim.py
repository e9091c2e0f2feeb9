"""AdamW, the learning-rate schedule, and the FLOPs count behind MFU.

AdamW with decoupled weight decay on matrices only (biases, norm weights and 1-d parameters are
never decayed, as transformers' Trainer does); torch's fused kernel (CUDA and CPU), as the Trainer's
default `adamw_torch_fused`. The schedule is
transformers' cosine / linear / constant-with-warmup, with the warmup in steps or as a ratio of all
steps (docs/science.md §6: 100 steps for CAR; §9.4: 3% for StruQ).

FLOPs per real (non-pad) token follow docs/science.md §14: 6·N + 12·L·H·Q·T for full fine-tuning (N the
matmul parameters including lm_head even when tied, embedding lookups excluded), about 4·N (+
attention) with LoRA, since frozen weights get no weight gradients.
"""

from __future__ import annotations

import math
from typing import Any

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A6000": 155.0, "4090": 165.0}


def build_optimizer(module: Any, spec: Any, device_type: str) -> Any:
    import torch

    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    kwargs: dict[str, Any] = dict(lr=spec.learning_rate, betas=(spec.adam_beta1, spec.adam_beta2), eps=spec.adam_epsilon)
    try:  # one fused kernel per step (CUDA, and CPU since torch 2.4) instead of ~10 ops per tensor
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, foreach=True, **kwargs)


def warmup_steps(spec: Any, total_steps: int) -> int:
    if spec.warmup_steps is not None:
        return spec.warmup_steps
    if spec.warmup_ratio is not None:
        return math.ceil(spec.warmup_ratio * total_steps)
    return 0


def build_scheduler(optimizer: Any, spec: Any, total_steps: int) -> Any:
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[spec.lr_scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps(spec, total_steps), num_training_steps=total_steps)


def model_shape(config: Any) -> dict[str, int]:
    """L, H, Q, d and vocab of a decoder config (text config for multimodal wrappers)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    d = cfg.hidden_size
    heads = cfg.num_attention_heads
    q = getattr(cfg, "head_dim", None) or d // heads
    return {"L": cfg.num_hidden_layers, "H": heads, "Q": q, "d": d, "V": cfg.vocab_size}


def matmul_params(model: Any) -> int:
    """N of the MFU formula: parameters of every Linear (lm_head counted even when tied), no embeddings."""
    import torch

    seen = 0
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear):
            seen += mod.weight.numel()
    return seen


def flops_per_token(n_matmul: int, shape: dict[str, int], seq_len: float, lora: bool) -> float:
    """docs/science.md §14: 6N + 12·L·H·Q·T (full), ≈ 4N + attention (LoRA). T = mean sequence length."""
    attn = 12 * shape["L"] * shape["H"] * shape["Q"] * seq_len
    return (4 if lora else 6) * n_matmul + attn


def device_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU (spec sheet), or None: MFU is reported only against a known peak."""
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None
