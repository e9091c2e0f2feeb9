"""Training data for the finetune job: records -> prompt/response text -> tokens with response-only labels.

Pieces, in the order the job uses them:

- `need`: the fields a method reads are in every record (records themselves come from
  `_loading.read_dataset`, the reader every job shares).
- `apply_transform`: the named dataset transforms of docs/science.md §9.2 (StruQ training mix, SecAlign
  preference set) and best-of-N output -> SFT records, all from `engine.data.injection`.
- `sft_segments` / `dpo_texts` / `calibration_texts`: what text each record becomes under the
  spec's template, split into (text, trained?) segments.
- `tokenize_segments`: the whole string is tokenised at once (docs/science.md §0: tokenize P + A as one
  string) and a token is trained when its first character lies in a trained segment; labels of
  prompt tokens are -100, so prompt tokens contribute nothing to the loss.
- `Plan`: which examples each optimizer step sees, a pure function of (seed, epoch, step), so a
  resumed run can jump straight to its checkpoint's step with the same data order.
- `pad_batch` / `pack_batch`: padded (length-grouped) or padding-free micro-batches.

Imports only numpy at module level; the tokenizer is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.jobs._common import JobInputError
from engine.jobs._loading import check_fields, source_of
from engine.specs.common import DatasetRef

IGNORE = -100

# --------------------------------------------------------------------------------------------- records


def need(records: list[dict[str, Any]], fields: dict[str, str | None], ref: DatasetRef | None = None,
         label: str = "dataset") -> None:
    """`_loading.check_fields` for training data: every mapped field present and not null."""
    check_fields(records, fields, label, source_of(ref.path) if ref is not None else "", allow_null=False)


# ------------------------------------------------------------------------------------------ transforms


def apply_transform(name: str, records: list[dict[str, Any]], ref: DatasetRef, eos: str, seed: int,
                    reference_lookup: dict[str, str] | None = None, bon_select: str = "best") -> list[dict[str, Any]]:
    """Run a named transform from engine.data (docs/science.md §9.2; best-of-N -> SFT, §5).

    - 'struq': the StruQ training mix; rows {'prompt' (already in the StruQ format), 'completion'
      (output + eos)}, trained as given.
    - 'secalign': the SecAlign preference set; rows {'prompt', 'chosen', 'rejected'}, prompt
      formatted, responses ending in `eos`.
    - 'bon_to_sft': generate-job records with N `responses` (and `rewards`) -> Alpaca records
      {'instruction', 'input', 'output'} holding the selected response.

    The record's own field names (`ref`) are mapped to the Alpaca names the builders read.
    """
    if name == "none":
        return records
    if name in ("struq", "secalign"):
        from engine.data import injection

        need(records, {"dataset.instruction_field": ref.instruction_field, "dataset.output_field": ref.output_field}, ref)
        alpaca = [_alpaca(r, ref) for r in records]
        if name == "struq":
            return injection.build_struq_dataset(alpaca, seed, reference_lookup, eos_token=eos)
        prefs = injection.build_secalign_preferences(alpaca, seed, reference_lookup, eos_token=eos)
        if not prefs:
            raise JobInputError("transform secalign: no record has a non-empty input, so there is nothing to inject into")
        return prefs
    if name == "bon_to_sft":
        from engine.data import bon_to_sft

        need(records, {"dataset.instruction_field": ref.instruction_field, "responses (transform bon_to_sft)": "responses"}, ref)
        renamed = [{**r, "instruction": r[ref.instruction_field],
                    "input": (r.get(ref.input_field) or "") if ref.input_field else ""} for r in records]
        try:
            return bon_to_sft(renamed, mode=bon_select)
        except (ValueError, KeyError, TypeError) as e:
            raise JobInputError(f"transform bon_to_sft: {e}") from None
    raise JobInputError(f"transform {name!r}: unknown")


def _alpaca(r: dict[str, Any], ref: DatasetRef) -> dict[str, str]:
    inp = (r.get(ref.input_field) or "") if ref.input_field else ""
    return {"instruction": r[ref.instruction_field], "input": inp, "output": r[ref.output_field]}


def reference_responses(records: list[dict[str, Any]], ref: DatasetRef) -> dict[str, str]:
    """instruction -> output of the original Alpaca data, for Completion injections (§9.2 step 4)."""
    need(records, {"injection_reference.instruction_field": ref.instruction_field,
                   "injection_reference.output_field": ref.output_field}, ref, "injection_reference")
    return {r[ref.instruction_field]: r[ref.output_field] for r in records}


# ----------------------------------------------------------------------------------------- templates

Segments = list[tuple[str, bool]]


def _with_eos(text: str, eos: str | None) -> str:
    return text if not eos or text.endswith(eos) else text + eos


def _prompt(template: str, instruction: str, inp: str) -> str:
    """The prompt text of a plain-text template, exactly as the generate/score jobs build it
    (engine.jobs._prompts.render), so a model is evaluated with the prompt it was trained on."""
    from engine.jobs._prompts import render

    return render(template, None, instruction, inp).text


def record_prompt(record: dict[str, Any], ref: DatasetRef) -> tuple[str, str]:
    instruction = record[ref.instruction_field]
    inp = (record.get(ref.input_field) or "") if ref.input_field else ""
    if not isinstance(instruction, str) or not isinstance(inp, str):
        raise JobInputError(f"dataset: {ref.instruction_field}/{ref.input_field} must be strings")
    return instruction, inp


def _messages(record: dict[str, Any], ref: DatasetRef, system_prompt: str | None) -> list[dict[str, str]]:
    if ref.messages_field:
        msgs = record[ref.messages_field]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise JobInputError(f"dataset: {ref.messages_field} must be a list of {{role, content}} messages")
        msgs = [{"role": m["role"], "content": m["content"]} for m in msgs]
    else:
        instruction, inp = record_prompt(record, ref)
        msgs = [{"role": "user", "content": instruction + ("\n\n" + inp if inp else "")},
                {"role": "assistant", "content": record[ref.output_field]}]
    if system_prompt and (not msgs or msgs[0]["role"] != "system"):
        msgs = [{"role": "system", "content": system_prompt}, *msgs]
    return msgs


def _render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_segments(tokenizer: Any, messages: list[dict[str, str]]) -> Segments:
    """Every assistant turn trained, everything else not, as the chat template renders it.

    Turn i's span is render(messages[:i+1]) minus render(messages[:i], generation prompt), which
    needs a template whose renders are prefixes of each other (true of ChatML, Llama 3, Mistral);
    one that is not is refused rather than guessed at.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise JobInputError("dataset: a chat record must end with an assistant message")
    full = _render(tokenizer, messages, False)
    segments: Segments = []
    pos = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, messages[:i], True) if i else ""
        upto = _render(tokenizer, messages[: i + 1], False)
        if not (upto.startswith(prefix) and full.startswith(upto) and len(prefix) >= pos):
            raise JobInputError("template chat: this chat template does not render conversations as prefixes of each other; use template raw/alpaca")
        span = upto[len(prefix):]
        trained = span.rstrip()  # the turn's text and end-of-turn token, not the newline after it
        segments.append((full[pos:len(prefix)], False))
        segments.append((trained, True))
        pos = len(prefix) + len(trained)
    segments.append((full[pos:], False))
    return [(t, trained) for t, trained in segments if t]


def sft_segments(record: dict[str, Any], ref: DatasetRef, template: str, tokenizer: Any,
                 system_prompt: str | None = None, preformatted: bool = False) -> Segments:
    """The (text, trained) segments of one SFT record: prompt untrained, response + EOS trained.

    Records from the StruQ transform carry a formatted 'prompt' and a 'completion' (with EOS).
    """
    if preformatted:
        return [(record["prompt"], False), (record["completion"], True)]
    if template == "chat":
        return chat_segments(tokenizer, _messages(record, ref, system_prompt))
    instruction, inp = record_prompt(record, ref)
    output = record[ref.output_field]
    if not isinstance(output, str):
        raise JobInputError(f"dataset: {ref.output_field} must be a string")
    return [(_prompt(template, instruction, inp), False), (_with_eos(output, tokenizer.eos_token), True)]


def dpo_texts(record: dict[str, Any], ref: DatasetRef, template: str, tokenizer: Any, chosen_field: str,
              rejected_field: str, system_prompt: str | None = None, preformatted: bool = False) -> tuple[Segments, Segments]:
    """Chosen and rejected as (prompt untrained, response trained) segments (docs/science.md §9.3).

    `preformatted` prompts (the SecAlign transform's) are used as they are.
    """
    chosen, rejected = record[chosen_field], record[rejected_field]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise JobInputError(f"dataset: {chosen_field}/{rejected_field} must be strings")
    if preformatted:
        prompt = record["prompt"]
    elif template == "chat":
        msgs = _messages({**record, ref.output_field: ""}, ref, system_prompt)[:-1] if not ref.messages_field else \
            record[ref.messages_field]
        full_c = chat_segments(tokenizer, [*msgs, {"role": "assistant", "content": chosen}])
        full_r = chat_segments(tokenizer, [*msgs, {"role": "assistant", "content": rejected}])
        return full_c, full_r
    else:
        instruction, inp = record_prompt(record, ref)
        prompt = _prompt(template, instruction, inp)
    eos = tokenizer.eos_token
    return [(prompt, False), (_with_eos(chosen, eos), True)], [(prompt, False), (_with_eos(rejected, eos), True)]


# --------------------------------------------------------------------------------------- tokenising


@dataclass
class Example:
    """One tokenised sequence: ids, and labels with -100 on untrained tokens."""

    input_ids: np.ndarray
    labels: np.ndarray

    @property
    def n_trained(self) -> int:
        return int((self.labels != IGNORE).sum())

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def tokenize_segments(tokenizer: Any, segments: Segments, max_len: int, add_special_tokens: bool) -> tuple[Example, bool]:
    """Tokenise the joined text once; returns the example and whether it was cut to max_len."""
    return tokenize_many(tokenizer, [segments], max_len, add_special_tokens)[0]


def tokenize_many(tokenizer: Any, segment_lists: Sequence[Segments], max_len: int, add_special_tokens: bool,
                  chunk: int = 1024) -> list[tuple[Example, bool]]:
    """`tokenize_segments` for many records, batched through the fast tokenizer."""
    out: list[tuple[Example, bool]] = []
    for start in range(0, len(segment_lists), chunk):
        part = segment_lists[start : start + chunk]
        texts = ["".join(t for t, _ in segs) for segs in part]
        bounds = [_trained_bounds(segs) for segs in part]
        if getattr(tokenizer, "is_fast", False):
            enc = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
            masks = [[_in_bounds(a, b, bd) for a, b in offs] for offs, bd in zip(enc["offset_mapping"], bounds, strict=True)]
            all_ids = enc["input_ids"]
        else:  # docs/science.md §0: the prompt is the token count of the prefix alone (first response only)
            all_ids, masks = [], []
            for text, bd in zip(texts, bounds, strict=True):
                ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
                first = bd[0][0] if bd else len(text)
                n_prompt = len(tokenizer(text[:first], add_special_tokens=add_special_tokens)["input_ids"])
                all_ids.append(ids)
                masks.append([i >= n_prompt for i in range(len(ids))])
        for ids, mask in zip(all_ids, masks, strict=True):
            ids_arr = np.asarray(ids, dtype=np.int64)
            labels = np.where(np.asarray(mask, dtype=bool), ids_arr, IGNORE)
            out.append((Example(ids_arr[:max_len], labels[:max_len]), len(ids_arr) > max_len))
    return out


def _trained_bounds(segments: Segments) -> list[tuple[int, int]]:
    bounds, pos = [], 0
    for t, trained in segments:
        if trained:
            bounds.append((pos, pos + len(t)))
        pos += len(t)
    return bounds


def _in_bounds(start: int, end: int, bounds: list[tuple[int, int]]) -> bool:
    if end <= start:  # special tokens inserted by the tokenizer (BOS) have empty spans
        return False
    return any(lo <= start < hi for lo, hi in bounds)


@dataclass
class TokenStats:
    total: int = 0
    truncated: int = 0
    dropped: int = 0

    def message(self, what: str) -> str:
        return (f"{what}: {self.total - self.dropped} of {self.total} records used; "
                f"{self.truncated} cut to max_seq_len, {self.dropped} dropped (no response token left)")


# --------------------------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Which examples every optimizer step uses, derived from (seed, epoch, step) alone.

    Each epoch shuffles the example indices with a generator seeded by (seed, epoch). With
    `group_by_length`, the shuffled order is cut into megabatches of 50 micro-batches and each
    megabatch is sorted by length and cut into micro-batches (the transformers
    LengthGroupedSampler scheme), so a micro-batch holds similar lengths and padding stays small;
    the micro-batches of a megabatch are then shuffled (so steps do not run from long to short),
    and the one holding the epoch's longest example goes first, so an OOM shows at once. The micro-batches are dealt
    round-robin to the ranks, `grad_accum x world` per step; the tail that does not divide among the
    ranks is dropped so every rank runs the same number of micro-batches.

    A step's examples do not depend on the micro-batch size actually used: on CUDA OOM the job
    splits each rank's share into smaller micro-batches, so the optimizer sees the same examples
    and the same loss normaliser.
    """

    lengths: Sequence[int]
    weights: Sequence[float]  # per example: what the step's loss is normalised by (trained tokens, pairs...)
    seed: int
    micro_batch: int
    grad_accum: int
    world: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    group_by_length: bool = True
    _cache: dict[int, list[list[int]]] = field(default_factory=dict, repr=False)

    def epoch_micro_batches(self, epoch: int) -> list[list[int]]:
        if epoch in self._cache:
            return self._cache[epoch]
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        mb = self.micro_batch
        if self.group_by_length and mb > 1:
            mega = 50 * mb
            lengths = np.asarray(self.lengths)
            micro = []
            for i in range(0, n, mega):
                part = order[i : i + mega]
                part = part[np.argsort(-lengths[part], kind="stable")]
                chunks = [part[j : j + mb].tolist() for j in range(0, len(part), mb)]
                micro.extend(chunks[k] for k in rng.permutation(len(chunks)))
            longest = max(range(len(micro)), key=lambda k: max(lengths[i] for i in micro[k]))
            micro.insert(0, micro.pop(longest))  # the longest first: an OOM shows at step 1
        else:
            micro = [order[i : i + mb].tolist() for i in range(0, n, mb)]
        micro = micro[: len(micro) - len(micro) % self.world]
        self._cache = {epoch: micro}  # keep one epoch: a resumed or long run moves forward
        return micro

    @property
    def steps_per_epoch(self) -> int:
        per_rank = (math.ceil(len(self.lengths) / self.micro_batch) // self.world)
        return max(1, math.ceil(per_rank / self.grad_accum))

    @property
    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * self.steps_per_epoch))

    def _step_micro(self, step: int) -> list[list[int]]:
        epoch, k = divmod(step, self.steps_per_epoch)
        span = self.grad_accum * self.world
        return self.epoch_micro_batches(epoch)[k * span : (k + 1) * span]

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def step_examples(self, step: int, rank: int = 0) -> list[int]:
        """This rank's examples for optimizer step `step` (0-based), in micro-batch order."""
        return [i for j, m in enumerate(self._step_micro(step)) if j % self.world == rank for i in m]

    def step_norm(self, step: int) -> float:
        """The loss normaliser of a step: the summed weights of every rank's examples."""
        return float(sum(self.weights[i] for m in self._step_micro(step) for i in m))


def micro_batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


# ------------------------------------------------------------------------------------------- batches


def pad_batch(examples: Sequence[Example], pad_id: int, side: str = "right") -> dict[str, Any]:
    """Pad to the longest; attention_mask is left out when nothing is padded (SDPA's causal fast path)."""
    import torch

    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e)
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        ids[row, sl] = torch.from_numpy(e.input_ids)
        labels[row, sl] = torch.from_numpy(e.labels)
        mask[row, sl] = 1
    batch: dict[str, Any] = {"input_ids": ids, "labels": labels}
    if not bool(mask.all()):
        batch["attention_mask"] = mask
    batch["n_real_tokens"] = int(mask.sum())
    return batch


def pack_batch(examples: Sequence[Example], flash_kwargs: bool = True) -> dict[str, Any]:
    """Padding-free: one row of concatenated sequences, position_ids restarting at 0 for each.

    Flash-attention varlen (and transformers' block-causal mask for SDPA/eager when
    attention_mask is None) reads sequence boundaries from the position_ids, so no token attends
    across examples. The first label of every sequence is -100, so no example is trained to
    predict the next one's first token.
    """
    import torch

    ids = torch.from_numpy(np.concatenate([e.input_ids for e in examples])).long()[None]
    labels_np = [e.labels.copy() for e in examples]
    for lab in labels_np:
        lab[0] = IGNORE
    labels = torch.from_numpy(np.concatenate(labels_np)).long()[None]
    pos = torch.from_numpy(np.concatenate([np.arange(len(e)) for e in examples])).long()[None]
    lens = torch.tensor([len(e) for e in examples], dtype=torch.int32)
    cu = torch.nn.functional.pad(torch.cumsum(lens, 0, dtype=torch.int32), (1, 0))
    batch: dict[str, Any] = {"input_ids": ids, "labels": labels, "position_ids": pos, "n_real_tokens": int(ids.shape[1])}
    if flash_kwargs:  # flash-attention varlen reads these directly instead of deriving them from position_ids
        batch.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=int(lens.max()), max_length_k=int(lens.max()))
    return batch
