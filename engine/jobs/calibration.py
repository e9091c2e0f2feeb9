"""Calibration tuning (Kapoor et al. 2024; docs/science.md §10.3): train an uncertainty estimator.

Records are (question c, answer p, label y): c is the rendered question ending in "\\nAnswer:", p
the model's own sanitised answer, y whether p is correct (§10.1). Three trained methods:

- **probe** (CT-Probe): features h = hidden_states[-1] at the last token of "{c} {p}" from the
  *frozen* model, computed once; an MLP head Linear(d,256)-ReLU-Linear(256,128)-ReLU-
  Linear(128,64)-ReLU-Linear(64,2), Xavier-normal weights, bias on, trained by 2-class CE.
- **lora** (CT-LoRA): the same head trained jointly with LoRA adapters, the features flowing
  through the adapted model.
- **lora_prompt** (CT-Query, "calibration tuning"): LoRA trained so that the next-token logits
  after the uncertainty query, restricted to the tokens "i" and "ii", predict y:
  L = CE(logits[-1, {i, ii}], y) + κ·JSD, the JSD being the token-wise Jensen-Shannon divergence
  between the adapted and the frozen model (adapters disabled) over the answer tokens of the
  original QA text, summed over tokens and averaged over the batch. No LM loss on answers.

Then, with everything frozen, a temperature (a single log T, initialised at 0) is fitted by CE on
the validation split (the '-TS' variants). Metrics on the validation split, from
engine.metrics.calibration_summary: the two-sided ECE (official, the paper's number; ECE is
reported for the TS version) and AUROC (unchanged by TS, reported raw), plus the one-sided ECE,
acc and unc_acc.

Training goes through the shared loop (`_train_loop.TrainLoop`): same optimiser, schedule,
checkpoints, resume and events as SFT. Sequences are right-padded and the last real token is
gathered, which gives the same logits as the official left padding with position ids that
start at each sequence's first token.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any

import numpy as np

from engine.jobs import _checkpoint
from engine.jobs._common import JobContext, JobInputError
from engine.jobs._loading import load_tokenizer, load_trainable_lm, read_dataset
from engine.jobs._train_data import IGNORE, Example, Plan, need, tokenize_many
from engine.jobs._train_loop import check_batch, check_schedule, make_accelerator, save_model, world_size
from engine.jobs._uncertainty import (
    FEATURE_TEXT,
    HEAD_FILE,
    HEAD_TEXT,
    QUERY_SUFFIX,
    build_head,
    choice_logits,
    choice_token_ids,
    last_hidden,
    parse_label,
    query_text,
)

__all__ = ["QUERY_SUFFIX", "build_head", "choice_token_ids", "fit_temperature", "jsd_per_token", "parse_label", "query_text", "train"]

def jsd_per_token(logits_p: Any, logits_q: Any) -> Any:
    """Jensen-Shannon divergence between two next-token distributions, per row, in nats."""
    import torch

    lp = torch.log_softmax(logits_p.float(), -1)
    lq = torch.log_softmax(logits_q.float(), -1)
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - math.log(2.0)
    return 0.5 * (lp.exp() * (lp - lm)).sum(-1) + 0.5 * (lq.exp() * (lq - lm)).sum(-1)


# calibration-tuning's experiments/temperature_scale.py: AdamW(lr 1e-2, weight decay 1e-2), CosineAnnealingLR(T_max =
# max_steps), 2000 steps over batches of 64 validation logits, CE, log T initialised at 0.
OFFICIAL_TS = {"optimizer": "AdamW", "lr": 1e-2, "weight_decay": 1e-2, "schedule": "cosine", "steps": 2000, "batch_size": 64}


def fit_temperature_adamw(logits: Any, labels: Any, steps: int = 2000, lr: float = 1e-2, weight_decay: float = 1e-2,
                          batch_size: int = 64) -> float:
    """The official fit (OFFICIAL_TS). Batches cycle through the validation logits in order (the official loader's
    shuffling is not pinned), so the result is deterministic."""
    import torch

    z = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([log_t], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    n = len(y)
    starts = list(range(0, n, batch_size)) or [0]
    for step in range(steps):
        a = starts[step % len(starts)]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z[a:a + batch_size] / log_t.exp(), y[a:a + batch_size])
        loss.backward()
        opt.step()
        sched.step()
    t = float(log_t.detach().exp().item())
    return t if math.isfinite(t) else 1.0


def fit_temperature(logits: Any, labels: Any, steps: int = 100, method: str = "lbfgs") -> float:
    """Fit a single log T (init 0) by CE on validation logits, everything else frozen (--scale-temp): 'lbfgs' the
    exact optimum, 'adamw' calibration-tuning's own fit (`fit_temperature_adamw`)."""
    import torch

    if method == "adamw":
        return fit_temperature_adamw(logits, labels)
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    # Uninformative logits (a constant predictor's optimum is T -> inf) would run away: keep T in
    # [0.01, 100], far outside what a trained estimator needs.
    t = float(log_t.detach().exp().item())
    return min(max(t, 0.01), 100.0) if math.isfinite(t) else 1.0


# ------------------------------------------------------------------------------------------ modules


def _modules() -> dict[str, Any]:
    import torch

    from engine.jobs._train_model import response_logits

    class HeadOnly(torch.nn.Module):
        """Probe: the head on precomputed frozen features."""

        def __init__(self, head: Any) -> None:
            super().__init__()
            self.head = head

        def logits2(self, features: Any) -> Any:
            return self.head(features.float())

        def forward(self, features: Any, y: Any) -> dict[str, Any]:
            z = self.logits2(features)
            return {"loss_sum": torch.nn.functional.cross_entropy(z, y, reduction="sum"),
                    "stats": {"train_acc": (z.argmax(-1) == y).float().sum()}}

    class LoraHead(torch.nn.Module):
        """CT-LoRA: features through the adapted model, then the head."""

        def __init__(self, model: Any, head: Any) -> None:
            super().__init__()
            self.model = model
            self.head = head

        def logits2(self, input_ids: Any, attention_mask: Any, last: Any) -> Any:
            return self.head(last_hidden(self.model, input_ids, attention_mask, last).float())

        def forward(self, input_ids: Any, attention_mask: Any, last: Any, y: Any) -> dict[str, Any]:
            z = self.logits2(input_ids, attention_mask, last)
            return {"loss_sum": torch.nn.functional.cross_entropy(z, y, reduction="sum"),
                    "stats": {"train_acc": (z.argmax(-1) == y).float().sum()}}

    class Query(torch.nn.Module):
        """CT-Query: CE over the {'i', 'ii'} logits after the uncertainty query, + κ·JSD."""

        def __init__(self, model: Any, ids: tuple[int, int], kappa: float) -> None:
            super().__init__()
            self.model = model
            self.ids = list(ids)
            self.kappa = kappa

        def logits2(self, input_ids: Any, attention_mask: Any, last: Any) -> Any:
            return choice_logits(self.model, input_ids, attention_mask, last, self.ids)

        def forward(self, input_ids: Any, attention_mask: Any, last: Any, y: Any, qa_ids: Any = None,
                    qa_mask: Any = None, qa_labels: Any = None) -> dict[str, Any]:
            z = self.logits2(input_ids, attention_mask, last)
            ce = torch.nn.functional.cross_entropy(z, y, reduction="sum")
            stats = {"ce": ce.detach(), "train_acc": (z.argmax(-1) == y).float().sum()}
            loss = ce
            if self.kappa > 0 and qa_ids is not None:
                p_logits, _, rows = response_logits(self.model, qa_ids, qa_labels, attention_mask=qa_mask)
                with torch.no_grad(), self.model.disable_adapter():
                    q_logits, _, _ = response_logits(self.model, qa_ids, qa_labels, attention_mask=qa_mask)
                jsd = jsd_per_token(p_logits, q_logits).sum()  # summed over tokens; the loop averages over records
                loss = loss + self.kappa * jsd
                stats["jsd"] = jsd.detach()
            return {"loss_sum": loss, "stats": stats}

    return {"HeadOnly": HeadOnly, "LoraHead": LoraHead, "Query": Query}


def _pad(examples: list[Example], pad_id: int) -> tuple[Any, Any, Any, Any]:
    """Right-padded ids, attention mask, index of each row's last real token, labels."""
    import torch

    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for r, e in enumerate(examples):
        ids[r, : len(e)] = torch.from_numpy(e.input_ids)
        mask[r, : len(e)] = 1
        labels[r, : len(e)] = torch.from_numpy(e.labels)
    last = mask.sum(1) - 1
    return ids, mask, last, labels


# --------------------------------------------------------------------------------------------- train


def train(prep: Any, ctx: JobContext) -> None:
    import torch
    from transformers.utils import logging as hf_logging

    from engine.jobs import _optim, _train_model
    from engine.jobs._train_loop import RankReporter, TrainLoop
    from engine.metrics import calibration_summary, p_correct_from_logits

    hf_logging.disable_progress_bar()
    spec = prep.spec
    ds = spec.dataset
    style = spec.calibration_style
    events = RankReporter(ctx.events, int(os.environ.get("RANK", "0")) == 0)

    # ---- records and the validation split
    def labelled(records: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
        return [(r[ds.instruction_field], r[ds.output_field], parse_label(r[spec.label_field], i, spec.label_field))
                for i, r in enumerate(records)]

    rows = labelled(prep.records)
    gold = spec.calibration_style == "lora_prompt" and spec.jsd_weight > 0 and spec.jsd_text == "target"
    if gold:
        need(prep.records, {"target_field (jsd_text: target)": spec.target_field}, ds)
        gold_of = {(r[ds.instruction_field], r[ds.output_field]): str(r[spec.target_field]) for r in prep.records}
    if spec.validation is not None:
        val_records = read_dataset(spec.validation, "validation")
        need(val_records, {"validation.instruction_field": spec.validation.instruction_field,
                           "validation.output_field": spec.validation.output_field, "label_field": spec.label_field},
             spec.validation, "validation")
        val_rows = [(r[spec.validation.instruction_field], r[spec.validation.output_field],
                     parse_label(r[spec.label_field], i, spec.label_field)) for i, r in enumerate(val_records)]
        train_rows = rows
    else:
        order = np.random.default_rng([spec.seed, 10_3]).permutation(len(rows))
        n_val = max(1, round(spec.validation_fraction * len(rows)))
        if len(rows) - n_val < 1:
            raise JobInputError(f"dataset: {len(rows)} records leave nothing to train on after holding out {n_val} for validation")
        val_rows = [rows[i] for i in order[:n_val]]
        train_rows = [rows[i] for i in order[n_val:]]
    check_batch(spec, len(train_rows), world_size(), "records")

    tokenizer = load_tokenizer(spec.model, padding_side=None)
    ids_pair = choice_token_ids(tokenizer, f"model {spec.model.path}") if style == "lora_prompt" else None

    def tokenize(rows_: list[tuple[str, str, int]]) -> dict[str, Any]:
        qa = tokenize_many(tokenizer, [[(c, False), (" " + p, True)] for c, p, _ in rows_], spec.max_seq_len, True)
        out = {"qa": [e for e, _ in qa], "y": [y for _, _, y in rows_], "cut": sum(c for _, c in qa)}
        if gold:  # the JSD term on the question with its gold target, as calibration-tuning computes it
            jsd = tokenize_many(tokenizer, [[(c, False), (" " + gold_of.get((c, p), p), True)] for c, p, _ in rows_],
                                spec.max_seq_len, True)
            out["jsd"] = [e for e, _ in jsd]
        if style == "lora_prompt":
            # the query is read at its last token: cut it from the left so that the question's end survives
            q = tokenize_many(tokenizer, [[(query_text(c, p), False)] for c, p, _ in rows_], 10**9, True)
            out["query"] = [Example(e.input_ids[-spec.max_seq_len:], e.labels[-spec.max_seq_len:]) for e, _ in q]
            out["cut"] += sum(len(e) > spec.max_seq_len for e, _ in q)
        return out

    train_data, val_data = tokenize(train_rows), tokenize(val_rows)
    events.info(f"calibration ({style}): {len(train_rows)} training and {len(val_rows)} validation records; "
                f"{train_data['cut'] + val_data['cut']} sequences cut to max_seq_len", train=len(train_rows),
                validation=len(val_rows))

    # ---- model
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    attn = _train_model.pick_attention(spec.attn_implementation, device_type)
    lora = spec.lora is not None
    dtype = _train_model.load_dtype(spec.model, device_type, lora=True)
    torch.manual_seed(spec.seed)  # LoRA's A matrices and the head's Xavier draws follow the seed
    model = load_trainable_lm(spec.model, dtype, attn)
    model.requires_grad_(False)
    if spec.gradient_checkpointing and lora:
        _train_model.enable_gradient_checkpointing(model)
    if lora:
        model = _train_model.apply_lora(model, spec.lora, spec.gradient_checkpointing)
    accelerator = make_accelerator(spec, model, dtype)
    device = accelerator.device
    mods = _modules()
    hidden = _optim.model_shape(model.config)["d"]
    pad_id = tokenizer.pad_token_id

    if style == "probe":
        model.to(device).eval()
        feats = {}
        with torch.no_grad():
            for name, data in (("train", train_data), ("val", val_data)):
                chunks = []
                for i in range(0, len(data["qa"]), 16):
                    ids, mask, last, _ = _pad(data["qa"][i : i + 16], pad_id)
                    with accelerator.autocast():
                        chunks.append(last_hidden(model, ids.to(device), mask.to(device), last.to(device)).float().cpu())
                feats[name] = torch.cat(chunks)
        module = mods["HeadOnly"](build_head(hidden))

        def collate(idx: list[int]) -> dict[str, Any]:
            return {"features": feats["train"][idx].to(device), "y": torch.tensor([train_data["y"][i] for i in idx], device=device),
                    "n_real_tokens": 0}
    else:
        if style == "lora":
            module = mods["LoraHead"](model, build_head(hidden).to(torch.float32))
            seqs = train_data["qa"]
        else:
            module = mods["Query"](model, ids_pair, spec.jsd_weight)
            seqs = train_data["query"]

        def collate(idx: list[int]) -> dict[str, Any]:
            ids, mask, last, _ = _pad([seqs[i] for i in idx], pad_id)
            batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "last": last.to(device),
                     "y": torch.tensor([train_data["y"][i] for i in idx], device=device),
                     "n_real_tokens": int(mask.sum())}
            if style == "lora_prompt" and spec.jsd_weight > 0:
                qa_ids, qa_mask, _, qa_labels = _pad([train_data["jsd" if gold else "qa"][i] for i in idx], pad_id)
                batch.update(qa_ids=qa_ids.to(device), qa_mask=qa_mask.to(device), qa_labels=qa_labels.to(device))
                batch["n_real_tokens"] += int(qa_mask.sum())
            return batch

    n_train = len(train_rows)
    plan = Plan(lengths=[len(e) for e in (train_data["query"] if style == "lora_prompt" else train_data["qa"])],
                weights=[1.0] * n_train, seed=spec.seed, micro_batch=spec.per_device_batch, grad_accum=spec.grad_accum,
                world=world_size(), epochs=spec.epochs, max_steps=spec.max_steps, group_by_length=True)
    check_schedule(spec, plan)
    start = int(prep.resume_state["step"]) if prep.resume_state else 0
    optimizer = _optim.build_optimizer(module, spec, device_type)
    module, optimizer = accelerator.prepare(module, optimizer)
    scheduler = _optim.build_scheduler(optimizer, spec, plan.total_steps)
    if prep.resume_path is not None:
        _checkpoint.load(prep.resume_path, module, optimizer, scheduler, accelerator)
        events.info(f"resumed from {prep.resume_path} at step {start} of {plan.total_steps}", resumed_step=start)
    loop = TrainLoop(accelerator=accelerator, module=module, optimizer=optimizer, scheduler=scheduler, plan=plan,
                     collate=collate, events=events, spec=spec, spec_dump=prep.spec_dump,
                     checkpoint_root=prep.checkpoint_root)
    state = loop.run(start)

    # ---- validation logits, temperature, metrics
    inner = accelerator.unwrap_model(module)
    inner.eval()
    z_chunks = []
    with torch.no_grad(), accelerator.autocast():
        for i in range(0, len(val_rows), 16):
            if style == "probe":
                z_chunks.append(inner.logits2(feats["val"][i : i + 16].to(device)).float().cpu())
                continue
            seqs = val_data["query"] if style == "lora_prompt" else val_data["qa"]
            ids, mask, last, _ = _pad(seqs[i : i + 16], pad_id)
            z_chunks.append(inner.logits2(ids.to(device), mask.to(device), last.to(device)).float().cpu())
    z = torch.cat(z_chunks).numpy().astype(np.float64)
    y = np.asarray(val_data["y"])
    temperature = fit_temperature(z, y, method=spec.temperature_fit) if spec.temperature_scaling else 1.0
    raw = calibration_summary(p_correct_from_logits(z), y)
    scaled = calibration_summary(p_correct_from_logits(z / temperature), y)
    metrics = {f"val_{k}": v for k, v in raw.items() if k != "n"}
    if spec.temperature_scaling:
        metrics.update({f"val_ts_{k}": v for k, v in scaled.items() if k not in ("n", "acc", "auroc")})
        metrics["temperature"] = temperature
    events.metrics(metrics)

    # ---- save: adapter (LoRA) + head + calibration.json, with the tokenizer
    if accelerator.is_main_process:
        out = prep.out_model
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        if lora:
            save_model(inner.model, tokenizer, tmp, lora=True, merge=False, dtype=None, is_main=True, state_dict=None,
                       info={"method": "calibration", "style": style, "steps": state.step})
        else:
            tmp.mkdir(parents=True)
            tokenizer.save_pretrained(tmp)
        if style in ("probe", "lora"):
            from safetensors.torch import save_file

            head = inner.head
            save_file({k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()},
                      str(tmp / HEAD_FILE), metadata={"format": "pt"})
        info = {"style": style, "base_model": spec.model.path, "temperature": temperature, "steps": state.step,
                "feature": FEATURE_TEXT if style != "lora_prompt" else None,
                "query_suffix": QUERY_SUFFIX if style == "lora_prompt" else None,
                "choice_token_ids": list(ids_pair) if ids_pair else None, "jsd_weight": spec.jsd_weight,
                "jsd_text": ("question + gold target" if gold else "question + the model's answer")
                if style == "lora_prompt" and spec.jsd_weight > 0 else None,
                "temperature_fit": ({"method": "adamw", **OFFICIAL_TS} if spec.temperature_fit == "adamw" else
                                    {"method": "lbfgs", "optimum": "exact CE minimum of log T"})
                if spec.temperature_scaling else None,
                "question_field": ds.instruction_field,
                "head": HEAD_TEXT if style != "lora_prompt" else None,
                "validation": {k: v for k, v in metrics.items()}}
        (tmp / "calibration.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
        with open(prep.out_model.parent / "validation_predictions.jsonl", "w", encoding="utf-8") as fh:
            p_raw, p_ts = p_correct_from_logits(z), p_correct_from_logits(z / temperature)
            for (c, p, lab), a, b in zip(val_rows, p_raw, p_ts, strict=True):
                fh.write(json.dumps({"question": c, "answer": p, "label": lab, "p_correct": float(a), "p_correct_ts": float(b)}) + "\n")
        os.replace(tmp, out)
    accelerator.wait_for_everyone()
    events.artifact("model", "outputs/model", format="adapter" if lora else "head", method="calibration", style=style,
                    steps=state.step, temperature=temperature, base_model=spec.model.path)
