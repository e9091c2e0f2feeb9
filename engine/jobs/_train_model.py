"""Preparing the model a finetune or calibration job trains.

Loading itself (what a model path means, safetensors only, `trust_remote_code` only when the spec
asks with a pinned revision) is `_loading`'s, shared with every other job. Here:

- Precision: fp32 on the CPU. On a GPU, full fine-tuning keeps fp32 master weights with bf16
  autocast (what transformers' Trainer does with bf16=True, and SecAlign's bf16 + FSDP runs);
  LoRA loads the frozen base in bf16 and peft keeps the adapters in fp32. An explicit
  `model.dtype` is taken as given (e.g. bfloat16 weights to save memory).
- Attention: flash_attention_2 on a GPU when flash-attn is installed, SDPA otherwise.
- `response_logits` runs the model's own forward (so logit soft-capping and scaling stay
  right) with a boolean `logits_to_keep`, so the lm_head runs only where a trained label follows.
  transformers before `slice_logits_to_keep` (the newest on Python 3.10) reads a 2-D mask as
  positions and fails; there the forward keeps every position and the mask selects after it.
- `add_delimiter_tokens`: the StruQ special tokens and their embedding initialisation (§9.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.jobs._common import JobInputError
from engine.jobs._train_data import IGNORE
from engine.specs.common import ModelRef


def pick_attention(requested: str, device_type: str) -> str:
    if requested != "auto":
        return requested
    if device_type == "cuda":
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
            return "flash_attention_2"
    return "sdpa"


def load_dtype(ref: ModelRef, device_type: str, lora: bool) -> Any:
    import torch

    if ref.dtype != "auto":
        return getattr(torch, ref.dtype)
    if device_type == "cuda" and lora:
        return torch.bfloat16
    return torch.float32


def source_dtype(model: Any) -> Any:
    """The dtype the starting checkpoint was saved in (config.dtype), to save the result in."""
    import torch

    cfg_dtype = getattr(model.config, "dtype", None) or getattr(model.config, "torch_dtype", None)
    if isinstance(cfg_dtype, str):
        cfg_dtype = getattr(torch, cfg_dtype, None)
    return cfg_dtype if isinstance(cfg_dtype, torch.dtype) else next(model.parameters()).dtype


def apply_lora(model: Any, lora: Any, gradient_checkpointing: bool) -> Any:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                     bias="none", task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, cfg)
    except ValueError as e:
        raise JobInputError(f"lora: {str(e).splitlines()[0][:200]}") from None
    if gradient_checkpointing:
        peft_model.enable_input_require_grads()
    return peft_model


def enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing (works with frozen inputs, LoRA and DDP)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


@dataclass
class NewTokens:
    """Tokens added to a tokenizer, and where each new embedding row comes from (docs/science.md §9.1)."""

    added: list[str]
    copy_from: dict[int, int]  # new id -> id of the first token of its textual counterpart
    mean_ids: list[int]  # new ids initialised to the mean embedding ([PAD])


def add_delimiter_tokens(tokenizer: Any, textual: dict[str, str], pad_token: str | None) -> NewTokens:
    """Add the StruQ delimiter tokens (and [PAD] when the tokenizer has no real pad token) to `tokenizer`.

    The textual counterparts are tokenised *before* the new tokens exist, and each new token
    records the id of the first token of its counterpart ([MARK] <- '###', [INST] <-
    'instruction', ...). Tokens already in the vocabulary (a StruQ or undefended SFT model trained
    further, e.g. by SecAlign DPO) are left alone. `init_new_embeddings` fills the rows once the
    model is loaded.
    """
    vocab = tokenizer.get_vocab()
    new = [t for t in textual if t not in vocab]
    add_pad = pad_token is not None and pad_token not in vocab and (
        tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token)
    sources = {t: tokenizer(textual[t], add_special_tokens=False)["input_ids"][0] for t in new}
    special: dict[str, Any] = {}
    if new:
        special["extra_special_tokens"] = list(new)
    if add_pad:
        special["pad_token"] = pad_token
    if special:
        tokenizer.add_special_tokens(special, replace_extra_special_tokens=False)
    return NewTokens(
        added=new + ([pad_token] if add_pad else []),
        copy_from={tokenizer.convert_tokens_to_ids(t): sources[t] for t in new},
        mean_ids=[tokenizer.convert_tokens_to_ids(pad_token)] if add_pad else [],
    )


def init_new_embeddings(model: Any, tokenizer: Any, new: NewTokens) -> None:
    """Grow the embeddings to the tokenizer if needed and initialise the new rows (docs/science.md §9.1).

    Input and output embeddings both: a delimiter's row is a copy of its textual counterpart's
    first-token row; [PAD] is the mean of the old rows (Alpaca's smart_tokenizer_and_embedding_resize).
    """
    import torch

    if not new.added:
        return
    old_n = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_n:  # grow only: a vocabulary padded beyond the tokenizer (Qwen2) already has the rows
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    first_new = min([*new.copy_from, *new.mean_ids])  # the mean is over the rows of the tokens that existed
    tables = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != tables[0].data_ptr():
        tables.append(out.weight)
    with torch.no_grad():
        for table in tables:
            for tid, src in new.copy_from.items():
                table[tid] = table[src]
            for tid in new.mean_ids:
                table[tid] = table[:first_new].mean(0)
    model.config.pad_token_id = tokenizer.pad_token_id


def logits_to_keep(mask: Any) -> Any:
    """`mask` as the forward's `logits_to_keep` when this transformers takes a boolean mask, else 0
    (every position: the caller selects `logits[mask]` itself, same numbers, more lm_head work)."""
    from transformers import modeling_utils

    return mask if hasattr(modeling_utils, "slice_logits_to_keep") else 0


def keep_mask(labels: Any) -> Any:
    """Positions t whose next token (t+1) is trained: where the lm_head must run."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


def response_logits(model: Any, input_ids: Any, labels: Any, **inputs: Any) -> tuple[Any, Any, Any]:
    """(logits, targets, row) for every trained token: logits [n, V] in fp32, targets [n], row [n]."""
    keep = keep_mask(labels)
    out = model(input_ids=input_ids, use_cache=False, logits_to_keep=logits_to_keep(keep), **inputs)
    logits = out.logits
    if logits.dim() == 3:  # every position came back (an older transformers, or a model without the mask)
        logits = logits[keep]
    targets = labels[:, 1:][labels[:, 1:] != IGNORE]
    rows = keep.nonzero()[:, 0]
    return logits.float(), targets, rows
