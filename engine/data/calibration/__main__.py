"""`python -m engine.data.calibration prepare OUT | tiny OUT`: the calibration recipes' data and tiny models.

- `prepare OUT`: MMLU (5-shot, OE by default) and the training pool from the hub, as jsonl (see
  `engine.data.calibration`); run it once on the GPU box, then point the recipes' vars at OUT.
- `tiny OUT`: the tiny variants' models (the recipes run it as their first stage): one tokenizer
  trained on the shipped tiny sets and two small causal LMs of different architectures, each
  briefly trained to *know* a different two thirds of the tiny answers, so that their answers are
  partly right and partly wrong (a random model's would all be wrong, leaving AUROC undefined).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.data.calibration import HERE, prepare

TINY_SETS = ("tiny_pool.jsonl", "tiny_mmlu.jsonl")
TINY_MODELS = (("llama", "llama", 0), ("qwen", "qwen2", 1))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def known_by(record_id: str, which: int) -> bool:
    """Whether tiny model `which` is taught this record's answer: two thirds each, overlapping in one third."""
    h = int(hashlib.sha256(record_id.encode()).hexdigest(), 16) % 3
    return h != which


def build_tiny(out: Path, steps: int, seed: int, only: Sequence[str] = ()) -> dict[str, str]:
    from transformers.utils import logging as hf_logging

    from engine.tiny import build_causal_lm, build_tokenizer, fit_texts

    hf_logging.disable_progress_bar()
    rows = [r for name in TINY_SETS for r in _rows(HERE / name)]
    tok_dir = out / "tokenizer"
    build_tokenizer(tok_dir, [r["instruction"] + " " + r["target"] for r in rows], vocab_size=768)
    built = {"tokenizer": str(tok_dir)}
    unknown = set(only) - {n for n, _, _ in TINY_MODELS}
    if unknown:
        raise SystemExit(f"--only: no tiny model named {sorted(unknown)[0]!r} (known: llama, qwen)")
    for name, arch, which in TINY_MODELS:
        if only and name not in only:
            continue
        path = build_causal_lm(out / name, tok_dir, arch=arch, hidden=64, layers=2, seed=seed + which)
        texts = [r["instruction"] + " " + r["target"] for r in rows if known_by(r["id"], which)]
        prompts = [r["instruction"] for r in rows if known_by(r["id"], which)]
        fit_texts(path, texts, prompts=prompts, steps=steps, seed=seed + which)
        built[name] = str(path)
        print(f"built {name} ({arch}), taught {len(texts)} of {len(rows)} answers, in {path}", flush=True)
    (out / "models.json").write_text(json.dumps(built, indent=2), encoding="utf-8")
    return built


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.data.calibration", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="download and format MMLU and the training pool (needs the hub)")
    pp.add_argument("out", type=Path)
    pp.add_argument("--kshot", type=int, default=5, help="MMLU shots from the dev split (§10.2: 5)")
    pp.add_argument("--format", choices=("oe", "mc"), default="oe", help="open-ended (the heatmaps) or multiple choice")
    pp.add_argument("--seed", type=int, default=0, help="shot sampling (seed + index) and the pool draw")
    pp.add_argument("--train", type=int, default=20_000, help="training records (§10.1: 20,000)")
    pp.add_argument("--validation", type=int, default=2_000, help="validation records (§10.1: 2,000)")
    pp.add_argument("--only", nargs="*", default=(), metavar="NAME", help="pool datasets to use (default all)")
    pp.add_argument("--skip", nargs="*", default=(), metavar="NAME", help="pool datasets to leave out")
    pp.add_argument("--mmlu", default="cais/mmlu", help="MMLU hub id or local copy")
    tp = sub.add_parser("tiny", help="build the tiny variants' tokenizer and models (no network)")
    tp.add_argument("out", type=Path)
    tp.add_argument("--steps", type=int, default=80, help="training steps that teach each model its answers")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--only", nargs="*", default=(), metavar="NAME", help="build only these models (llama, qwen)")
    args = p.parse_args(argv)
    if args.cmd == "tiny":
        build_tiny(args.out, args.steps, args.seed, args.only)
        return 0
    manifest = prepare(args.out, kshot=args.kshot, fmt=args.format, seed=args.seed, n_train=args.train,
                       n_val=args.validation, only=args.only, skip=args.skip, mmlu=args.mmlu)
    for name, w in manifest["written"].items():
        print(f"{name}: {w['records']} records in {w['path']}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
