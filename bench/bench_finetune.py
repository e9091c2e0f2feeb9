"""Training throughput of the finetune job's SFT path against a plain transformers Trainer.

    PYTHONPATH=. python bench/bench_finetune.py [--steps 16] [--batch 8] [--repeat 3] [--with-packing]

Same run, same data, same model, same hyper-parameters:

- **labdeck**: the `finetune` job (in-process, through `engine.jobs.__main__.main`), SFT, response-only
  loss, length-grouped batches (CPU/SDPA) or padding-free packing (flash-attention), lm_head only
  where a trained label follows. With --with-packing also `packing: on` (padding-free on SDPA via
  transformers' block-causal mask from position_ids).
- **Trainer**: `transformers.Trainer` with the same tokenised examples (prompt labels -100),
  `DataCollatorForSeq2Seq` padding each random batch to its longest, default sampler.

Reported: real (non-pad) tokens per second of training, the speed-up, the Trainer's padding share,
and MFU = tokens/s x FLOPs/token / peak with FLOPs/token = 6N + 12·L·H·Q·T (docs/science.md §14; N the
matmul parameters including lm_head, T the mean sequence length), printed only on CUDA against a
known peak (989 TFLOP/s dense bf16 for H100). On CPU the achieved GFLOP/s are printed instead.

Data: variable-length synthetic instruction/response pairs (log-uniform lengths, as real SFT sets
are heavy-tailed), so padding matters the way it does on real data. On CUDA the model is a
random-init Llama of about 0.55B parameters; on CPU a ~3M-parameter one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "engine"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("alpha beta gamma delta model token answer question data train loss step batch learn rate layer "
         "head value query key attention sequence length window memory compute graph kernel").split()


def make_records(n: int, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        n_in = int(np.exp(rng.uniform(np.log(4), np.log(80))))
        n_out = int(np.exp(rng.uniform(np.log(4), np.log(220))))
        rows.append({"instruction": " ".join(rng.choice(WORDS, n_in)), "input": "",
                     "output": " ".join(rng.choice(WORDS, n_out))})
    return rows


def build_model(root: Path, cuda: bool) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from engine.tiny import build_tokenizer

    build_tokenizer(root / "tok", texts=[" ".join(WORDS)] * 8, vocab_size=1024)
    tok = AutoTokenizer.from_pretrained(root / "tok")
    if cuda:  # ~0.55B: the issue asks for >= 0.5B on a GPU
        shape = dict(hidden_size=1024, intermediate_size=5504, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=4)
    else:
        shape = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    out = root / "model"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def flops_per_token(model_dir: Path, mean_len: float) -> tuple[float, int]:
    from transformers import AutoModelForCausalLM

    from engine.jobs._optim import flops_per_token as fpt
    from engine.jobs._optim import matmul_params, model_shape

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    n = matmul_params(model)
    return fpt(n, model_shape(model.config), mean_len, lora=False), sum(p.numel() for p in model.parameters())


def run_labdeck(root: Path, model: Path, data: Path, args: argparse.Namespace, tag: str,
                **extra) -> list[tuple[float, float]]:  # noqa: ANN003
    """Per optimizer step: (real tokens, seconds), from the job's own events."""
    from jobrun import run_inprocess

    spec = dict(kind="finetune", model=str(model), dataset=str(data), template="alpaca", learning_rate=1e-4,
                max_steps=args.steps, per_device_batch=args.batch, grad_accum=1, warmup_steps=0,
                max_seq_len=1024, seed=0, **extra)
    res = run_inprocess(root / f"run-{tag}-{time.time_ns()}", spec)
    if res.rc != 0:
        raise SystemExit(f"labdeck job failed: {res.errors()}")
    tps, secs = res.series("tokens_per_s"), res.series("step_time_s")
    return [(tps[s] * secs[s], secs[s]) for s in sorted(secs)]


def run_trainer(root: Path, model_dir: Path, records: list[dict], args: argparse.Namespace,
                cuda: bool) -> tuple[list[tuple[float, float]], float]:
    """Per optimizer step: (real tokens, seconds between step ends), and the padding share."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    from engine.jobs._train_data import sft_segments, tokenize_many
    from engine.specs.common import DatasetRef

    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "right"
    segs = [sft_segments(r, DatasetRef(path="x"), "alpaca", tok) for r in records]
    examples = [{"input_ids": e.input_ids.tolist(), "labels": e.labels.tolist(), "attention_mask": [1] * len(e)}
                for e, _ in tokenize_many(tok, segs, 1024, True)]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    base = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    counts = {"real": 0, "padded": 0}
    batch_tokens: list[int] = []
    ends: list[float] = []

    def collate(features):  # noqa: ANN001, ANN202
        batch = base(features)
        batch_tokens.append(int(batch["attention_mask"].sum()))
        counts["real"] += batch_tokens[-1]
        counts["padded"] += batch["attention_mask"].numel()
        return batch

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            if not ends:
                ends.append(time.perf_counter() - 0.0)

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN003, ANN201
            if args.device.type == "cuda":
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

    targs = TrainingArguments(output_dir=str(root / f"trainer-{time.time_ns()}"), per_device_train_batch_size=args.batch,
                              gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-4,
                              lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, logging_steps=10**6,
                              save_strategy="no", report_to=[], use_cpu=not cuda, bf16=cuda, seed=0,
                              dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=examples, data_collator=collate, callbacks=[Clock()])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    steps = [(float(batch_tokens[i]), ends[i + 1] - ends[i]) for i in range(len(ends) - 1)]
    return steps, 1 - counts["real"] / max(1, counts["padded"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for torch (default 1: on a shared 2-core box, 2-thread ops stall on the "
                         "slower thread and timings measure the neighbours, not the code)")
    ap.add_argument("--with-packing", action="store_true",
                    help="also time `packing: on` (padding-free on SDPA; slow on CPU: attention over the packed row)")
    ap.add_argument("--json", type=str, default=None, help="also write the figures to this file")
    args = ap.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from engine.jobs._optim import device_peak_flops

    hf_logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-ft-"))
    records = make_records(args.records, seed=0)
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    model = build_model(root, cuda)

    from transformers import AutoTokenizer

    from engine.jobs._train_data import sft_segments, tokenize_many
    from engine.specs.common import DatasetRef

    tok = AutoTokenizer.from_pretrained(model)
    lens = [len(e) for e, _ in tokenize_many(tok, [sft_segments(r, DatasetRef(path="x"), "alpaca", tok) for r in records], 1024, True)]
    mean_len = statistics.mean(lens)
    fpt, n_params = flops_per_token(model, mean_len)
    device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; model: random-init Llama, {n_params / 1e6:.1f}M parameters; "
          f"{args.records} records, {min(lens)}-{max(lens)} tokens (mean {mean_len:.0f}); "
          f"batch {args.batch}, {args.steps} steps, fp32{' + bf16 autocast' if cuda else ''}")
    print(f"FLOPs per real token (6N + 12·L·H·Q·T): {fpt / 1e6:.1f} MFLOP")

    # warm-up (kernel selection, allocator), then alternate the contenders
    run_labdeck(root, model, data, argparse.Namespace(**{**vars(args), "steps": 2}), "warm")
    runs: dict[str, list[list[tuple[float, float]]]] = {"labdeck": [], "Trainer (padded)": []}
    if args.with_packing:
        runs["labdeck packing=on"] = []
    pad_share = []
    for _ in range(args.repeat):
        runs["labdeck"].append(run_labdeck(root, model, data, args, "grouped"))
        if args.with_packing:
            runs["labdeck packing=on"].append(run_labdeck(root, model, data, args, "packed", packing="on"))
        steps, pad = run_trainer(root, model, records, args, cuda)
        runs["Trainer (padded)"].append(steps)
        pad_share.append(pad)

    def whole(run: list[tuple[float, float]]) -> float:
        return sum(t for t, _ in run) / sum(s for _, s in run)

    def robust(rs: list[list[tuple[float, float]]]) -> float:
        # Every repeat runs the same batches in the same order (fixed seeds), so step i's fastest
        # repeat is its least-disturbed timing on a shared machine.
        n = min(len(r) for r in rs)
        return sum(rs[0][i][0] for i in range(n)) / sum(min(r[i][1] for r in rs) for i in range(n))

    peak = device_peak_flops(device) if cuda else None
    base_med = statistics.median(whole(r) for r in runs["Trainer (padded)"])
    base_rob = robust(runs["Trainer (padded)"])
    figures = {}
    unit = "MFU" if peak else "GFLOP/s"
    print(f"\n{'':22s} {'tok/s median':>13s} {'x':>6s} {'tok/s per-step-min':>19s} {'x':>6s} {unit:>8s}   runs (tok/s)")
    for name, rs in runs.items():
        med = statistics.median(whole(r) for r in rs)
        rob = robust(rs)
        util = f"{rob * fpt / peak:8.1%}" if peak else f"{rob * fpt / 1e9:8.2f}"
        print(f"{name:22s} {med:13,.0f} {med / base_med:5.2f}x {rob:19,.0f} {rob / base_rob:5.2f}x {util}   "
              + ", ".join(f"{whole(r):,.0f}" for r in rs))
        figures[name] = {"tokens_per_s_median": med, "speedup_median": med / base_med, "tokens_per_s_robust": rob,
                         "speedup_robust": rob / base_rob, "runs": [whole(r) for r in rs],
                         ("mfu" if peak else "gflops"): (rob * fpt / peak) if peak else rob * fpt / 1e9}
    print(f"\nTrainer padding share (pad tokens / all tokens in its batches): {statistics.mean(pad_share):.1%}")
    if not peak:
        print("MFU: not printed (no known peak FLOP/s for this device; only GPU peaks are known)")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "params": n_params, "flops_per_token": fpt,
                                               "figures": figures, "trainer_padding_share": statistics.mean(pad_share)},
                                              indent=1))


if __name__ == "__main__":
    main()
