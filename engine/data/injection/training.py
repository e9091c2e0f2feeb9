"""Simulated prompt injections for training, and the StruQ / SecAlign datasets (docs/science.md §9.2).

Reimplemented from the SecAlign repository's `struq.py` and `align.py` (pinned commit) with an
explicit, seeded `random.Random` instead of numpy's global state, so that a dataset is a pure
function of (records, seed). The draws follow the same distributions as the repo; the same seed
does not give the repo's exact samples.

Records are Alpaca dicts: `instruction`, `input` (may be missing or empty) and `output`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Literal

from .formats import DEFAULT_EOS_TOKEN, DELIMITERS, PROMPT_INPUT, SPCL, format_prompt

Record = Mapping[str, str]
Injection = Literal["none", "naive", "completion"]

# Parts of the random textual delimiters that replace the reserved ones in Completion
# injections (SecAlign `config.py` OTHER_DELM_TOKENS). The last OTHER_DELIMITERS_FOR_TEST of
# each list are held out for the test-time `completion_other*` attacks.
OTHER_DELIMITER_PARTS: dict[str, tuple[str, ...]] = {
    "mark": ("{s}", "|{s}|", "<{s}>", "[{s}]", "<|{s}|>", "[|{s}|]", "<[{s}]>", "'''{s}'''", "***{s}***"),
    "inst": ("Command", "Rule", "Prompt", "Task"),
    "inpt": ("Data", "Context", "Text"),
    "resp": ("Output", "Answer", "Reply"),
    "user": ("", "Prompter ", "User ", "Human "),
    "asst": ("", "Assistant ", "Chatbot ", "Bot ", "GPT ", "AI "),
}
OTHER_DELIMITERS_FOR_TEST = 2


def injected_instruction(sample: Record) -> str:
    """The instruction of `sample` phrased for appending to another sample's data (§9.2 step 1).

    A question becomes "answer the following question. <instruction> <input>"; anything else gets
    its first character lower-cased. Either way " " + input follows, leaving a trailing space when
    the sample has no input (as the repo does).
    """
    instruction = sample["instruction"]
    if not instruction:
        raise ValueError("cannot inject a sample with an empty instruction")
    data = sample.get("input", "")
    if instruction.endswith("?"):
        return f"answer the following question. {instruction} {data}"
    return f"{instruction[0].lower()}{instruction[1:]} {data}"


def with_period(data: str) -> str:
    """Training-time data always ends with "." before an injection is appended (§9.2 step 2)."""
    return data if data.endswith(".") else data + "."


def inject_naive(data: str, injected_sample: Record) -> str:
    """The Naive ("Straightforward") injection: data + " " + the injected instruction, first letter
    upper-cased."""
    injected = injected_instruction(injected_sample)
    return f"{with_period(data)} {injected[0].upper()}{injected[1:]}"


def inject_completion(data: str, own_response: str, injected_sample: Record, rng: random.Random) -> str:
    """The Completion injection: a fake end of the response, then a fake new instruction (§9.2 step 4).

    Appends [resp delimiter] + `own_response`, [inst delimiter] + `injected.capitalize()`
    (Python's, which lower-cases everything after the first character), and, if the injected
    sample has an input, [input delimiter] + that input (so it appears twice). Every reserved
    delimiter is then swapped for a random textual one.
    """
    injected = injected_instruction(injected_sample)
    text = f"{with_period(data)}\n\n{SPCL.response}\n{own_response}\n\n{SPCL.instruction}\n{injected.capitalize()}"
    injected_data = injected_sample.get("input", "")
    if injected_data:
        text += f"\n\n{SPCL.input}\n{injected_data}"
    return format_with_other_delimiters(text, rng)


def format_with_other_delimiters(text: str, rng: random.Random, test: bool = False) -> str:
    """Replace every known delimiter in `text` with a random textual one, e.g. "<USER TASK>:" (§9.2).

    One mark format (e.g. "<{s}>") is drawn per call, then for each delimiter family and slot a
    role ("", "Prompter ", ...; "Assistant ", ... for responses) and a name ("Command", "Data",
    "Output", ...), upper-cased, lower-cased or left as is with probability 1/3 each. Training
    draws from all but the last two entries of each list; `test=True` from only those two.
    """

    def options(kind: str) -> tuple[str, ...]:
        parts = OTHER_DELIMITER_PARTS[kind]
        held_out = len(parts) - OTHER_DELIMITERS_FOR_TEST
        return parts[held_out:] if test else parts[:held_out]

    mark = rng.choice(options("mark")) + ":"

    def sample(slot: str) -> str:
        role = rng.choice(options("asst" if slot == "resp" else "user"))
        name = rng.choice(options(slot))
        p = rng.random()
        words = role + name
        if p < 1 / 3:
            words = words.upper()
        elif p < 2 / 3:
            words = words.lower()
        return mark.format(s=words)

    for d in DELIMITERS.values():
        text = text.replace(d.instruction, sample("inst"))
        text = text.replace(d.input, sample("inpt"))
        text = text.replace(d.response, sample("resp"))
    return text


def inject(
    record: Record,
    injected_sample: Record,
    kind: Literal["naive", "completion"],
    rng: random.Random,
    reference_lookup: Mapping[str, str] | None = None,
) -> str:
    """`record`'s data with `injected_sample` injected by `kind`.

    For Completion, the fake response is the reference response to `record`'s instruction from
    `reference_lookup` (the original `alpaca_data.json`, keyed by exact instruction text), falling
    back to `record`'s own output.
    """
    data = record.get("input", "")
    if not data:
        raise ValueError("only samples with a non-empty input are injected")
    if kind == "naive":
        return inject_naive(data, injected_sample)
    if kind == "completion":
        lookup = reference_lookup or {}
        own_response = lookup.get(record["instruction"], record["output"])
        return inject_completion(data, own_response, injected_sample, rng)
    raise ValueError(f"kind must be 'naive' or 'completion', got {kind!r}")


def build_struq_dataset(
    records: Sequence[Record],
    rng_seed: int,
    reference_lookup: Mapping[str, str] | None = None,
    eos_token: str = DEFAULT_EOS_TOKEN,
) -> list[dict[str, str]]:
    """The StruQ training set `SpclSpclSpcl_NaiveCompletion` (§9.2), one row per record.

    The repo builds four aligned copies [Naive, clean, Completion, clean] and picks one per index
    uniformly; this draws the copy first and builds only that one, which has the same distribution.
    Among samples with input: about 50% clean, 25% Naive, 25% Completion; input-less samples are
    always clean. The injected sample is drawn uniformly from all records (itself included).

    Rows: `prompt`, `completion` (= output + eos, always the legitimate response) and `injection`
    ("none", "naive" or "completion").
    """
    rng = random.Random(rng_seed)
    copies: tuple[Injection, ...] = ("naive", "none", "completion", "none")
    rows = []
    for record in records:
        kind = copies[rng.randrange(len(copies))]
        data = record.get("input", "")
        if not data:
            kind = "none"
        if kind != "none":
            injected_sample = records[rng.randrange(len(records))]
            data = inject(record, injected_sample, kind, rng, reference_lookup)
        rows.append(
            {
                "prompt": format_prompt(record["instruction"], data),
                "completion": record["output"] + eos_token,
                "injection": kind,
            }
        )
    return rows


def build_secalign_preferences(
    records: Sequence[Record],
    rng_seed: int,
    reference_lookup: Mapping[str, str] | None = None,
    naive_proportion: float = 0.9,
    eos_token: str = DEFAULT_EOS_TOKEN,
) -> list[dict[str, str]]:
    """The SecAlign preference set `NaiveCompletion` (§9.2, SecAlign Algorithm 1).

    Samples without input are skipped. For each other sample s, draw s′ from all records, inject
    it with Naive (probability `naive_proportion`, 0.9) or else Completion, and emit
    `prompt` = prompt_input(injected s), `chosen` = s.output + eos (the legitimate answer),
    `rejected` = s′.output + eos (obeying the injection), plus `injection` for bookkeeping.
    """
    rng = random.Random(rng_seed)
    rows = []
    for record in records:
        if not record.get("input", ""):
            continue
        injected_sample = records[rng.randrange(len(records))]
        kind: Literal["naive", "completion"] = "naive" if rng.random() < naive_proportion else "completion"
        data = inject(record, injected_sample, kind, rng, reference_lookup)
        rows.append(
            {
                "prompt": PROMPT_INPUT.format(instruction=record["instruction"], input=data),
                "chosen": record["output"] + eos_token,
                "rejected": injected_sample["output"] + eos_token,
                "injection": kind,
            }
        )
    return rows
