"""Build the demo's tiny local models: `python -m engine.demo build OUT_DIR`.

`labdeck demo` runs this as the first stage of its pipeline (a `command` job), so the models are
built by the worker like any other job, with no network and no GPU. It writes, under OUT_DIR:

* `tokenizer/`: a byte-level BPE tokenizer trained on the demo instruction set, with a chat template;
* `teacher-a`, `teacher-b`, `teacher-c`: three generators of different quality. They are the same
  tiny Llama architecture, trained for 120, 30 and 0 steps on the demo set's reference answers,
  so that their responses (and therefore reward, compatibility and the students trained on them)
  really differ;
* `student-llama`, `student-qwen`: two untrained base models (Llama and Qwen2 architectures),
  the "students" that are fine-tuned on each teacher's responses;
* `reward`: a sequence-classification reward model, trained for a few steps to score reference
  answers above shuffled ones (a stand-in for ArmoRM / Skywork);
* `judge`: a second sequence-classification reward model, used by the judge stage as a reward-model
  judge (P(student wins) = sigmoid(r(answer) - r(reference))). It is trained for JUDGE_STEPS pairwise
  steps to rank the reference answer above corrupted or wrong answers (another instruction's answer,
  shuffled, truncated, repeated, reversed or random words), on the training set AND on the held-out
  eval references the students are judged against.

Why the judge sees the eval references: it is a fixture standing in for a strong judge (a GPT-4-class
annotator, or a large reward model, knows what a correct answer to "name the capital of Italy" is
without having seen our eval set). A model this small cannot learn that from 48 examples, and a tiny
causal LM asked AlpacaEval's m/M question (what the demo used before) is indifferent: its win rates sat
near 50% whatever the student, so Spearman's rho against CAR meant nothing. Training the judge on the
eval references makes it a reliable oracle of "close to the reference"; it does not leak anything to
the students or teachers, which never see the eval set. Its win rates are "RM-judge" numbers, not
AlpacaEval's: they show the pipeline working, not a finding.

The teacher and reward training here is a fixture builder, not a user-facing trainer: a short
hand loop keeps the demo self-contained and fast (seconds on two cores); real training goes through
the `finetune` job.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
TRAIN_FILE = DATA_DIR / "demo_train.jsonl"
EVAL_FILE = DATA_DIR / "demo_eval.jsonl"

TEACHER_STEPS = {"teacher-a": 120, "teacher-b": 30, "teacher-c": 0}
JUDGE_STEPS = 300


def load_records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _prompt(rec: dict[str, str]) -> str:
    return rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")


def _train_lm(model, tokenizer, records: list[dict[str, str]], steps: int, seed: int) -> None:  # noqa: ANN001
    """A few full-batch AdamW steps on prompt -> reference answer, loss on the answer only."""
    import torch

    if steps <= 0:
        return
    torch.manual_seed(seed)
    rows = []
    for rec in records:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": _prompt(rec)}], tokenize=False, add_generation_prompt=True)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(rec["output"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _reversed_other(rec: dict[str, str], records: list[dict[str, str]], rng: random.Random) -> str:
    return rng.choice(records)["output"][::-1]


def _judge_negative(rec: dict[str, str], records: list[dict[str, str]], rng: random.Random) -> str:
    """A worse answer than the reference: wrong, scrambled, cut short, degenerate or noise."""
    words = rec["output"].split()
    kind = rng.randrange(6)
    if kind == 0:  # fluent but answers another instruction
        return rng.choice([r for r in records if r["output"] != rec["output"]])["output"]
    if kind == 1 and len(words) > 1:  # the right words in the wrong order
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        return " ".join(shuffled)
    if kind == 2 and len(words) > 1:  # cut short
        return " ".join(words[: rng.randrange(1, len(words))])
    if kind == 3:  # a tiny LM's favourite failure: repetition
        return " ".join(words[: rng.randrange(1, 3)] * rng.randrange(3, 8))
    if kind == 4:
        return rec["output"][::-1]
    vocab = [w for r in records for w in r["output"].split()]  # random words of the domain
    return " ".join(rng.choice(vocab) for _ in range(rng.randrange(2, 12)))


def _train_reward(model, tokenizer, records: list[dict[str, str]], steps: int, seed: int,  # noqa: ANN001
                  negative=_reversed_other) -> None:  # noqa: ANN001
    """Pairwise (Bradley-Terry) steps: the reference answer above `negative(record, records, rng)`."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)

    def encode(rec: dict[str, str], answer: str) -> list[int]:
        chat = [{"role": "user", "content": _prompt(rec)}, {"role": "assistant", "content": answer}]
        return tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]

    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        batch = rng.sample(records, 16)
        good = [encode(r, r["output"]) for r in batch]
        bad = [encode(r, negative(r, records, rng)) for r in batch]
        seqs = good + bad
        width = max(map(len, seqs))
        pad = tokenizer.pad_token_id
        # right padding: the classifier reads the last non-pad token
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        scores = model(input_ids=ids, attention_mask=mask).logits[:, 0]
        loss = -torch.nn.functional.logsigmoid(scores[:16] - scores[16:]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def build(out_dir: Path) -> dict[str, str]:
    """Build every demo model under `out_dir`; returns name -> folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from engine.tiny import build_causal_lm, build_reward_model, build_tokenizer

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out_dir.mkdir(parents=True, exist_ok=True)
    train = load_records(TRAIN_FILE)

    texts = [_prompt(r) + "\n" + r["output"] for r in train + load_records(EVAL_FILE)]
    tok_dir = out_dir / "tokenizer"
    build_tokenizer(tok_dir, texts, vocab_size=768)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    built: dict[str, str] = {"tokenizer": str(tok_dir)}

    for i, (name, steps) in enumerate(TEACHER_STEPS.items()):
        path = build_causal_lm(out_dir / name, tok_dir, arch="llama", hidden=96, layers=2, seed=10 + i)
        if steps:
            model = AutoModelForCausalLM.from_pretrained(path)
            _train_lm(model, tokenizer, train, steps, seed=i)
            model.save_pretrained(path, safe_serialization=True)
        built[name] = str(path)
        print(f"built {name} ({steps} training steps)", flush=True)

    built["student-llama"] = str(build_causal_lm(out_dir / "student-llama", tok_dir, arch="llama", seed=21))
    built["student-qwen"] = str(build_causal_lm(out_dir / "student-qwen", tok_dir, arch="qwen2", seed=22))
    print("built students", flush=True)

    rm_path = build_reward_model(out_dir / "reward", tok_dir, seed=31)
    rm = AutoModelForSequenceClassification.from_pretrained(rm_path)
    _train_reward(rm, tokenizer, train, steps=40, seed=31)
    rm.save_pretrained(rm_path, safe_serialization=True)
    built["reward"] = str(rm_path)
    print("built reward model", flush=True)

    judge_path = build_reward_model(out_dir / "judge", tok_dir, hidden=96, seed=41)
    judge = AutoModelForSequenceClassification.from_pretrained(judge_path)
    # the eval references too: the judge stands in for a strong judge (see the module docstring)
    _train_reward(judge, tokenizer, train + load_records(EVAL_FILE), JUDGE_STEPS, seed=41, negative=_judge_negative)
    judge.save_pretrained(judge_path, safe_serialization=True)
    built["judge"] = str(judge_path)
    print("built judge", flush=True)

    (out_dir / "models.json").write_text(json.dumps(built, indent=2))
    return built


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "build":
        print("usage: python -m engine.demo build OUT_DIR", file=sys.stderr)
        return 2
    build(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
