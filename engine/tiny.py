"""Tiny local models and tokenizers, built in seconds, for tests and `labdeck demo`.

Nothing can be downloaded on a machine without the hub, yet every job must go through the real
loading code (`from_pretrained`). So we build real checkpoints: a byte-level BPE tokenizer trained
on the fly with `tokenizers` and given a chat template, and random-init Llama / Qwen2 causal LMs and
a sequence-classification reward model, all saved with `save_pretrained` as safetensors.

This module imports torch and transformers: it runs in job processes, tests and the demo builder,
never in the TUI, the CLI's start-up or the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

# ChatML, as Qwen2 uses it; generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

BASE_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token from the tokens before it.",
    "Fine-tuning adapts a pretrained model to a task with a small learning rate.",
    "Answer the following question. What is two plus two? Four.",
    "Summarize the text in one sentence. Translate the sentence to French. Bonjour, merci.",
    "user assistant system instruction input response hacked print exactly",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 yes no i ii (i) (ii) Choices: Answer: Question:",
]


# A base model's end of text, distinct from the chat template's end of turn (as Qwen2.5's <|endoftext|> vs <|im_end|>).
BASE_EOS = "<|endoftext|>"


def build_tokenizer(out_dir: Path | str, texts: Iterable[str] = (), vocab_size: int = 512,
                    eos_token: str = "<|im_end|>"):  # noqa: ANN201
    """Train a byte-level BPE tokenizer on `texts` (plus a small base corpus) and save it.

    `eos_token` "<|im_end|>" (the default) makes eos and end of turn one token, as in an instruct model;
    `BASE_EOS` gives a base model's split: eos <|endoftext|>, while the ChatML template still ends a turn
    with <|im_end|> (Qwen2.5, Llama-3.x and Gemma-2 base models all have this split).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = SPECIAL_TOKENS + ([eos_token] if eos_token not in SPECIAL_TOKENS else [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(BASE_CORPUS) + list(texts)
    tok.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token=eos_token,
        additional_special_tokens=["<|im_start|>"] + (["<|im_end|>"] if eos_token != "<|im_end|>" else []),
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


def _config(arch: str, vocab_size: int, tokenizer, hidden: int, layers: int, num_labels: int | None = None):  # noqa: ANN001, ANN202
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    if num_labels is not None:
        common["num_labels"] = num_labels
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"arch: {arch!r} is not one of llama, qwen2")


def _save_random_init(
    out_dir: Path | str, tokenizer_dir: Path | str | None, arch: str, hidden: int, layers: int, seed: int,
    texts: Sequence[str], num_labels: int | None,
) -> Path:
    """A random-init model (causal LM, or a sequence classifier with `num_labels`) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tokenizer = build_tokenizer(out, texts)
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = _config(arch, len(tokenizer), tokenizer, hidden, layers, num_labels=num_labels)
    if num_labels is None:
        model = AutoModelForCausalLM.from_config(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    else:
        model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(out, safe_serialization=True)
    return out


def build_causal_lm(
    out_dir: Path | str,
    tokenizer_dir: Path | str | None = None,
    *,
    arch: str = "llama",
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    texts: Sequence[str] = (),
) -> Path:
    """A random-init causal LM with its tokenizer, saved as safetensors. Returns the folder."""
    return _save_random_init(out_dir, tokenizer_dir, arch, hidden, layers, seed, texts, num_labels=None)


def build_reward_model(
    out_dir: Path | str,
    tokenizer_dir: Path | str | None = None,
    *,
    arch: str = "llama",
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """A random-init sequence-classification reward model (one logit), saved as safetensors."""
    return _save_random_init(out_dir, tokenizer_dir, arch, hidden, layers, seed, (), num_labels=1)


def fit_texts(model_dir: Path | str, texts: Sequence[str], *, prompts: Sequence[str] | None = None, steps: int = 100,
              lr: float = 3e-3, batch: int = 16, seed: int = 0, append_eos: bool = True) -> Path:
    """Train a saved causal LM for `steps` on `texts` (LM loss, eos appended unless `append_eos` is off) and save it
    in place. Chat-rendered texts with `append_eos=False` teach a model to end at its template's end of turn only.

    With `prompts` (one per text, each a prefix of it), the loss is on what follows the prompt only.

    For tiny variants that need a model which *knows* some answers (e.g. calibration, where a random
    model's answers would all be wrong and AUROC undefined): it memorises these texts in seconds.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(model_dir)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    model.train()
    torch.set_num_threads(1)  # tiny matrices: more threads only spin against each other on a shared box
    seqs = [tok(t)["input_ids"] + ([tok.eos_token_id] if append_eos else []) for t in texts]
    starts = [len(tok(p)["input_ids"]) for p in prompts] if prompts is not None else [0] * len(seqs)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        idx = torch.randperm(len(seqs), generator=gen)[:batch].tolist()
        rows = [seqs[i] for i in idx]
        first = [starts[i] for i in idx]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, s in enumerate(rows):
            ids[r, : len(s)] = torch.tensor(s)
            labels[r, first[r] : len(s)] = torch.tensor(s[first[r]:])
            mask[r, : len(s)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


def _texts_of(paths: Sequence[str]) -> list[str]:
    """Every string value of every record in the given jsonl files (the tokenizer's training text)."""
    import json

    texts: list[str] = []
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts += [v for v in json.loads(line).values() if isinstance(v, str) and v]
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m engine.tiny OUT --lm NAME[:ARCH] ... [--reward NAME]`: the models a recipe's tiny variant needs.

    One tokenizer (OUT/tokenizer, trained on the `--texts` records) is shared by every model, so
    models built together can be merged, compared and used as each other's students or judges.
    """
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m engine.tiny", description=main.__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--lm", action="append", default=[], metavar="NAME[:ARCH]", help="a random-init causal LM (arch llama or qwen2)")
    p.add_argument("--reward", action="append", default=[], metavar="NAME[:ARCH]", help="a random-init reward model")
    p.add_argument("--texts", action="append", default=[], metavar="FILE.jsonl", help="records whose text trains the tokenizer")
    p.add_argument("--vocab", type=int, default=768)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base-eos", action="store_true",
                   help=f"eos {BASE_EOS} apart from the template's end of turn <|im_end|>, as in a base model")
    p.add_argument("--judge-prompt", action="store_true",
                   help="also train the tokenizer on the AlpacaEval judge prompt, so a tiny judge reads it in few tokens")
    args = p.parse_args(argv)
    if not args.lm and not args.reward:
        p.error("name at least one --lm or --reward")
    import os

    from transformers.utils import logging as hf_logging

    from engine.events import ENV_EVENTS, Reporter

    hf_logging.disable_progress_bar()
    texts = _texts_of(args.texts)
    if args.judge_prompt:
        from engine.jobs.scorers.judge import ALPACA_EVAL_SYSTEM, ALPACA_EVAL_USER

        texts += [ALPACA_EVAL_SYSTEM, ALPACA_EVAL_USER]
    # run as a labdeck job (a recipe's build stage), each model is reported as an artifact
    events = Reporter() if os.environ.get(ENV_EVENTS) else None
    tok_dir = args.out / "tokenizer"
    tokenizer = build_tokenizer(tok_dir, texts, vocab_size=args.vocab,
                                eos_token=BASE_EOS if args.base_eos else "<|im_end|>")
    built = {"tokenizer": str(tok_dir)}
    jobs = [(s, build_causal_lm, "causal_lm") for s in args.lm] + [(s, build_reward_model, "reward_model") for s in args.reward]
    for i, (spec, builder, what) in enumerate(jobs):
        name, _, arch = spec.partition(":")
        path = builder(args.out / name, tok_dir, arch=arch or "llama", hidden=args.hidden, layers=args.layers, seed=args.seed + i)
        built[name] = str(path)
        print(f"built {name} ({arch or 'llama'}) in {path}", flush=True)
        if events:
            events.artifact("model", path, name=name, type=what, arch=arch or "llama", hidden=args.hidden, layers=args.layers)
            events.progress(i + 1, len(jobs), unit="models")
    (args.out / "models.json").write_text(json.dumps(built, indent=2), encoding="utf-8")
    if events:
        events.metric("models_built", len(jobs))
        events.metric("vocab_size", len(tokenizer))
        events.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
