"""Data for the calibration recipes (Kapoor et al. 2024; docs/science.md §10.1-§10.2).

`python -m engine.data.calibration prepare OUT` (on a machine that reaches the hub) writes:

- `OUT/mmlu_{test,validation}.jsonl`: every MMLU item (57 subjects, `cais/mmlu`) as a 5-shot prompt
  from the subject's `dev` split (shots drawn with seed + index, §10.2), open-ended (OE, the target
  is the answer text) or multiple-choice (MC, the target is the letter);
- `OUT/pool.jsonl`: the training pool, 20,000 `train` then 2,000 `validation` records drawn
  uniformly across the datasets of `POOL` (§10.1 `all_20k_uniform`), as 1-shot OE prompts (the
  `split` field says which; the recipes hold out a seeded 1/11 for temperature scaling);
- `OUT/prepare.json`: what was written and every choice docs/science.md leaves UNPINNED.

Every record has `instruction` (the rendered prompt c, ending in "\\nAnswer:"), `target`, `dataset`,
`subject` (MMLU) and `id`. `python -m engine.data.calibration tiny OUT` builds the tiny models the
recipes' `tiny` variants use (`tiny_models`), on the shipped `tiny_pool.jsonl` / `tiny_mmlu.jsonl`.

The formatting functions are pure and tested on local rows; only `prepare` touches the hub (through
`datasets`, imported there). Dataset ids and field names of `POOL` other than MMLU's were not checked
against the hub from this machine (no network): `prepare` names the one that fails and `--only`
/ `--skip` choose datasets.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
LETTERS = "abcdefghij"

# ----------------------------------------------------------------------------------------- formats (§10.2)


def subject_name(subject: str) -> str:
    """'high_school_us_history' -> 'High school us history': calibration-tuning's prompt label,
    `(" ".join(task.split("_"))).capitalize()` (llm/datasets/hf/mmlu.py)."""
    return " ".join(subject.split("_")).capitalize()


def lm_text(context: str, target: str | None, target_prompt: str = "\nAnswer:") -> str:
    """calibration-tuning's `str(LMText)`: (prompt + context + target_prompt + " " + target).strip(); without a target
    the item a model answers, ending in 'Answer:'."""
    return (context + target_prompt + " " + (target or "")).strip()


def render_oe(question: str, target: str | None = None) -> str:
    """An OE item: context 'Question: {q}' (the question as given), then '\nAnswer:' and the target (§10.2)."""
    return lm_text(f"Question: {question}", None if target is None else str(target))


def render_mc(question: str, choices: Sequence[str], target: str | None = None) -> str:
    """An MC item: 'Question:\n{q}\n\nChoices:\n  (a): ...' then '\nAnswer:' and the letter (§10.2)."""
    context = "\n".join([f"Question:\n{question}", "\nChoices:", *(f"  ({LETTERS[i]}): {c}" for i, c in enumerate(choices))])
    return lm_text(context, target)


def kshot_prompt(header: str, shots: Sequence[str], item: str) -> str:
    """§10.2 as calibration-tuning's `format_sample_prompt` builds it: ["{header}\n", each shot + "\n",
    "Now, answer the next question.\n\n"] joined with "\n" (so a blank line after the header and between shots),
    then the item."""
    if not shots:
        return item
    return "\n".join([header + "\n", *(s + "\n" for s in shots), "Now, answer the next question.\n\n"]) + item


def mmlu_record(row: dict[str, Any], subject: str, shots: Sequence[dict[str, Any]], fmt: str, idx: str) -> dict[str, Any]:
    """One MMLU item ({question, choices, answer: int}) with its k shots, as a records-file row. `question` is the
    item alone (no shots): what an uncertainty estimator reads."""
    if fmt == "oe":
        header = f"The following are questions (with answers) about {subject_name(subject)}."
        rendered = [render_oe(s["question"], s["choices"][int(s["answer"])]) for s in shots]
        item, target = render_oe(row["question"]), row["choices"][int(row["answer"])]
    elif fmt == "mc":
        header = f"The following are multiple-choice questions (with answers) about {subject_name(subject)}."
        rendered = [render_mc(s["question"], s["choices"], LETTERS[int(s["answer"])]) for s in shots]
        item, target = render_mc(row["question"], row["choices"]), LETTERS[int(row["answer"])]
    else:
        raise ValueError(f"format: {fmt!r} is not oe or mc")
    return {"id": idx, "instruction": kshot_prompt(header, rendered, item), "question": item, "target": str(target),
            "subject": subject, "dataset": "mmlu", "format": fmt, "kshot": len(shots)}


def sample_shots(dev: Sequence[dict[str, Any]], k: int, seed: int, idx: int) -> list[dict[str, Any]]:
    """k dev examples, as calibration-tuning draws them for item idx:
    `np.random.default_rng(seed=seed + idx).permutation(len(dev))[:k]` (§10.2)."""
    if k <= 0 or not dev:
        return []
    import numpy as np

    order = np.random.default_rng(seed=seed + idx).permutation(len(dev))[:k].tolist()
    return [dev[i] for i in order]


# ----------------------------------------------------------------------------------------- training pool (§10.1)


@dataclass(frozen=True)
class PoolSource:
    """A hub dataset of the training pool and how a row becomes (question, answer)."""

    name: str
    path: str
    config: str | None
    split: str
    convert: Callable[[dict[str, Any]], tuple[str, str] | None]


def _choice(row: dict[str, Any], key: str = "answerKey") -> str:
    ch = row["choices"]
    return ch["text"][ch["label"].index(row[key])]


POOL: list[PoolSource] = [
    PoolSource("arc_easy", "allenai/ai2_arc", "ARC-Easy", "train", lambda r: (r["question"], _choice(r))),
    PoolSource("arc_challenge", "allenai/ai2_arc", "ARC-Challenge", "train", lambda r: (r["question"], _choice(r))),
    PoolSource("boolq", "google/boolq", None, "train",
               lambda r: (f"{r['passage']}\n{r['question']}?", "yes" if r["answer"] else "no")),
    PoolSource("commonsense_qa", "tau/commonsense_qa", None, "train", lambda r: (r["question"], _choice(r))),
    PoolSource("openbookqa", "allenai/openbookqa", "main", "train", lambda r: (r["question_stem"], _choice(r))),
    PoolSource("sciq", "allenai/sciq", None, "train", lambda r: (r["question"], r["correct_answer"])),
    PoolSource("siqa", "allenai/social_i_qa", None, "train",
               lambda r: (f"{r['context']} {r['question']}", r["answer" + "ABC"[int(r["label"]) - 1]])),
    PoolSource("winogrande", "allenai/winogrande", "winogrande_xl", "train",
               lambda r: (r["sentence"] + " What does _ refer to?", r["option" + str(r["answer"])]) if r["answer"] else None),
    PoolSource("cosmos_qa", "allenai/cosmos_qa", None, "train",
               lambda r: (f"{r['context']}\n{r['question']}", r[f"answer{int(r['label'])}"])),
    PoolSource("anli", "facebook/anli", None, "train_r1",
               lambda r: (f"{r['premise']}\nDoes this imply: {r['hypothesis']}?",
                          ("yes", "maybe", "no")[int(r["label"])]) if int(r["label"]) in (0, 1, 2) else None),
    PoolSource("snli", "stanfordnlp/snli", None, "train",
               lambda r: (f"{r['premise']}\nDoes this imply: {r['hypothesis']}?",
                          ("yes", "maybe", "no")[int(r["label"])]) if int(r["label"]) in (0, 1, 2) else None),
    PoolSource("math_qa", "allenai/math_qa", None, "train", lambda r: (r["Problem"], r["correct"])),
    PoolSource("truthful_qa", "truthfulqa/truthful_qa", "generation", "validation",
               lambda r: (r["question"], r["best_answer"])),
]


def pool_record(source: str, question: str, answer: str, shot: tuple[str, str] | None, idx: str, split: str) -> dict[str, Any]:
    """A 1-shot OE training record (§10.1 `--kshot=1`; the header-less 1-shot layout is UNPINNED, recorded)."""
    shots = [render_oe(*shot)] if shot else []
    header = "The following are questions (with answers)."
    item = render_oe(question)
    return {"id": idx, "instruction": kshot_prompt(header, shots, item), "question": item, "target": str(answer),
            "dataset": source, "split": split, "format": "oe", "kshot": len(shots)}


def uniform_pool(per_source: dict[str, list[tuple[str, str]]], n_train: int, n_val: int, seed: int) -> list[dict[str, Any]]:
    """n_train + n_val records drawn uniformly across sources (an equal share each), each with a 1-shot example
    from the same source; train records first, then validation. Deterministic in `seed`."""
    rng = random.Random(seed)
    names = sorted(k for k, v in per_source.items() if len(v) >= 2)
    if not names:
        raise ValueError("training pool: no dataset with at least two usable rows")
    total = n_train + n_val
    order = {k: rng.sample(range(len(per_source[k])), len(per_source[k])) for k in names}
    taken = dict.fromkeys(names, 0)
    picks: list[tuple[str, int]] = []
    while len(picks) < total:
        progressed = False
        for k in names:
            if len(picks) == total:
                break
            if taken[k] < len(order[k]) - 1:  # keep one row back as a shot
                picks.append((k, order[k][taken[k]]))
                taken[k] += 1
                progressed = True
        if not progressed:
            raise ValueError(f"training pool: only {len(picks)} usable rows for {total} records")
    rng.shuffle(picks)
    out = []
    for n, (k, i) in enumerate(picks):
        rows = per_source[k]
        j = rng.randrange(len(rows) - 1)
        j = j if j < i else j + 1  # a shot other than the item itself
        q, a = rows[i]
        out.append(pool_record(k, q, a, rows[j], f"{k}-{i}", "train" if n < n_train else "validation"))
    return out


# ----------------------------------------------------------------------------------------- writing


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def mmlu_records(by_subject: dict[str, dict[str, list[dict[str, Any]]]], split: str, k: int, seed: int,
                 fmt: str) -> list[dict[str, Any]]:
    """Every item of `split` for every subject, with k shots from that subject's dev split."""
    out = []
    for subject in sorted(by_subject):
        dev = by_subject[subject].get("dev", [])
        for i, row in enumerate(by_subject[subject].get(split, [])):
            out.append(mmlu_record(row, subject, sample_shots(dev, k, seed, i), fmt, f"{subject}-{split}-{i}"))
    return out


def prepare(out: Path, *, kshot: int = 5, fmt: str = "oe", seed: int = 0, n_train: int = 20_000, n_val: int = 2_000,
            only: Sequence[str] = (), skip: Sequence[str] = (), mmlu: str = "cais/mmlu") -> dict[str, Any]:
    """Download and format MMLU and the training pool (needs the hub; run on the GPU box)."""
    from datasets import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    raw = load_dataset(mmlu, "all")
    by_subject: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for split in ("dev", "validation", "test"):
        for row in raw[split]:
            by_subject.setdefault(row["subject"], {}).setdefault(split, []).append(dict(row))
    written = {}
    for split in ("test", "validation"):
        rows = mmlu_records(by_subject, split, kshot, seed, fmt)
        written[f"mmlu_{split}"] = {"path": str(write_jsonl(out / f"mmlu_{split}.jsonl", rows)), "records": len(rows)}

    per_source: dict[str, list[tuple[str, str]]] = {}
    for src in POOL:
        if (only and src.name not in only) or src.name in skip:
            continue
        try:
            ds = load_dataset(src.path, src.config, split=src.split)
        except Exception as e:  # noqa: BLE001 - the hub raises many kinds; name the dataset and go on
            raise SystemExit(f"pool dataset {src.name} ({src.path}, {src.config}, {src.split}): {str(e).splitlines()[0][:200]}; "
                             f"--skip {src.name} to leave it out") from None
        pairs = []
        for row in ds:
            try:
                qa = src.convert(dict(row))
            except (KeyError, ValueError, IndexError, TypeError) as e:
                raise SystemExit(f"pool dataset {src.name}: a row lacks the expected fields ({e!r}); --skip {src.name}") from None
            if qa and qa[0] and qa[1]:
                pairs.append((str(qa[0]), str(qa[1])))
        per_source[src.name] = pairs
    pool = uniform_pool(per_source, n_train, n_val, seed)
    written["pool"] = {"path": str(write_jsonl(out / "pool.jsonl", pool)), "records": len(pool),
                       "train": n_train, "validation": n_val, "sources": sorted(per_source)}
    manifest = {"written": written, "mmlu": mmlu, "kshot": kshot, "format": fmt, "seed": seed,
                "unpinned": {"prompt_joins": "INFERRED from docs/science.md §10.2's rendering",
                             "pool_1shot_layout": "header 'The following are questions (with answers).' (UNPINNED)",
                             "pool_sources": "StoryCloze (manual download), PIQA, COPA, CB, MultiRC, WSC and TREC "
                                             "are not included; HellaSwag is excluded for OE (§10.1)",
                             "pool_conversion": "each dataset's OE question/answer text is labdeck's (UNPINNED)"}}
    (out / "prepare.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest
