"""Scoring throughput: length-sorted batches under a token budget vs dataset-order batches (docs/science.md §14).
Real (non-pad) tokens per second and the padding fraction, same records, same process.

    PYTHONPATH=. python bench/bench_score.py [--records 96] [--batch 16] [--budget 4096]

Records have responses of widely varying length (log-uniform, ~10 to ~1000 tokens). Two measurements:
1. the reward model forward alone (`RewardModel.score_ids`, the code the score job runs) sorted vs unsorted, with a
   check that both give the same scores;
2. the score job itself (loss scorer) in-process, reporting the tokens/s and padding fraction it emits as metrics.
Goal: sorted >= 2x unsorted real tokens/s, padding < 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_records(n: int, seed: int = 0) -> list[dict]:
    import random

    rng = random.Random(seed)
    words = ("the quick brown fox jumps over a lazy dog while language models predict the next token of "
             "every sentence in the corpus").split()
    rows = []
    for i in range(n):
        k = int(8 * (110 ** rng.random()))  # log-uniform 8..880 words
        rows.append({"instruction": f"Question {i}: explain the fox.", "input": "",
                     "response": " ".join(rng.choice(words) for _ in range(k))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--budget", type=int, default=4096, help="sorted path: max rows x longest row per batch")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from engine.jobs.__main__ import main as job_main
    from engine.jobs._batching import Throughput, pad, unsorted_batches
    from engine.jobs.scorers.reward import RewardModel
    from engine.specs import ModelRef, dump_spec, parse_spec
    from engine.tiny import build_causal_lm, build_reward_model, build_tokenizer

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    root = Path(tempfile.mkdtemp(prefix="bench-score-"))
    build_tokenizer(root / "tok")
    hidden, layers = (1024, 12) if cuda else (128, 4)
    rm_dir = build_reward_model(root / "rm", root / "tok", hidden=hidden, layers=layers)
    lm_dir = build_causal_lm(root / "lm", root / "tok", hidden=hidden, layers=layers)
    rows = make_records(args.records)
    data = root / "records.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    rm = RewardModel(ModelRef(path=str(rm_dir)), device, max_length=1024, batch_size=args.batch,
                     max_batch_tokens=args.budget)
    seqs = [rm.encode(r["instruction"], r["response"]) for r in rows]
    lens = [len(s) for s in seqs]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def rm_unsorted() -> tuple[Throughput, list[float]]:
        th, scores = Throughput(), []
        for b in unsorted_batches(len(seqs), args.batch):
            batch = [seqs[i] for i in b]
            ids, mask, pos = pad(batch, rm.tok.pad_token_id, "left")
            th.add_batch(batch)
            sync()
            th.start()
            with torch.inference_mode():
                out = rm.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device))
            sync()
            th.stop()
            scores += out.logits[:, 0].float().tolist()
        return th, scores

    def rm_sorted() -> tuple[Throughput, list[float]]:
        rm.stats = Throughput()
        sync()
        scores = rm.score_ids(seqs)
        sync()
        return rm.stats, scores

    # the loss scorer's own code path (LossScorer._nll), unsorted vs its sorted batches
    from engine.jobs.scorers.base import Item
    from engine.jobs.scorers.likelihood import LossScorer

    spec = {"experiment": "bench", "name": "score", "kind": "score", "records": str(data),
            "scorers": [{"type": "loss", "model": str(lm_dir), "batch_size": args.batch,
                         "max_batch_tokens": args.budget}]}
    sc = LossScorer(parse_spec(spec).scorers[0], "\n\n", device)
    sc.prepare([Item(r["instruction"], "", r["response"], r) for r in rows])

    def lm_run(batches: list[list[int]]) -> Throughput:
        sc.stats = Throughput()
        for b in batches:
            sc._nll([sc.cond[i] for i in b])
        return sc.stats

    # warm-up on the longest rows, then best of `repeats` alternating runs (the box is shared)
    longest = sorted(range(len(seqs)), key=lambda i: -lens[i])[:2]
    rm.score_ids([seqs[i] for i in longest])
    lm_run([longest])
    best: dict[str, Throughput] = {}
    for _ in range(args.repeats):
        for name, fn in (("rm_u", lambda: rm_unsorted()[0]), ("rm_s", lambda: rm_sorted()[0]),
                         ("lm_u", lambda: lm_run(unsorted_batches(len(rows), args.batch))),
                         ("lm_s", lambda: lm_run(sc.batches(list(range(len(rows))))))):
            th = fn()
            if name not in best or th.tokens_per_s > best[name].tokens_per_s:
                best[name] = th
    naive, srt, lm_naive, lm_sorted = best["rm_u"], best["rm_s"], best["lm_u"], best["lm_s"]
    max_diff = max(abs(a - b) for a, b in zip(rm_unsorted()[1], rm_sorted()[1], strict=True))

    # the score job itself (loss scorer), in-process; its first batch pays the warm-up, as a real job does
    run = root / "job"
    run.mkdir()
    (run / "spec.json").write_text(json.dumps(dump_spec(parse_spec(spec))))
    t0 = time.perf_counter()
    assert job_main([str(run)]) == 0, (run / "events.jsonl").read_text()[-2000:]
    wall = time.perf_counter() - t0
    metrics = {e["name"]: e["value"] for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
               if e["type"] == "metric" and "step" not in e}

    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'} ({torch.get_num_threads()} threads); "
          f"random-init Llama hidden {hidden} x {layers} layers")
    print(f"records: {len(seqs)}, tokens per record {min(lens)}..{max(lens)} (mean {sum(lens) / len(lens):.0f}); "
          f"unsorted: {args.batch} rows per batch; sorted: <= {args.batch} rows and <= {args.budget} padded tokens")
    print(f"{'path':40s} {'batches':>7s} {'real tok/s':>11s} {'padding':>8s} {'vs unsorted':>12s}")
    for name, th, base in (("reward model, unsorted", naive, naive), ("reward model, sorted (score job)", srt, naive),
                           ("loss model, unsorted", lm_naive, lm_naive),
                           ("loss model, sorted (score job)", lm_sorted, lm_naive)):
        print(f"{name:40s} {th.batches:7d} {th.tokens_per_s:11.0f} {th.padding_fraction * 100:7.1f}% "
              f"{th.tokens_per_s / base.tokens_per_s:11.2f}x")
    tps, padf = metrics["loss_tokens_per_s"], metrics["loss_padding_fraction"]
    print(f"{'loss model, whole score job (reported)':40s} {'':7s} {tps:11.0f} {padf * 100:7.1f}% "
          f"{tps / lm_naive.tokens_per_s:11.2f}x   (job wall {wall:.1f} s incl. load)")
    print(f"reward scores sorted vs unsorted: max |diff| = {max_diff:.2e}; direct paths: best of {args.repeats} "
          f"interleaved runs; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
