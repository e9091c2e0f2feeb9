"""Decoding with transformers: the per-row seeded sampler, OpenAI-style presence/frequency penalties and
the HF generator of the generate job (docs/science.md §5, §8.3).

Sampling runs as greedy search over a last logits processor that draws each row's token from its
own `torch.Generator` (seeded from (seed, record key, sample index)), so a sample does not depend
on its batch. Before HF's temperature/top-k/top-p warpers, `apply_penalties` subtracts OpenAI's
penalties, counted over the tokens generated so far (not the prompt), as vLLM does:
    logit[t] -= presence_penalty * [count[t] > 0] + frequency_penalty * count[t]
Decoding stops at the checkpoint's eos ids, the tokenizer's eos and, when prompting with a chat
template, the template's end-of-turn token (`_stopping`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.jobs._batching import pad
from engine.jobs._stopping import stop_ids
from engine.specs.generate import GenerateSpec


def row_seed(seed: int, key: str, sample: int) -> int:
    """A 63-bit seed for sample `sample` of record `key`: stable across runs, machines and Python hash seeds."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def apply_penalties(scores: Any, generated: Any, presence: float, frequency: float) -> Any:
    """OpenAI's presence and frequency penalties on next-token logits `scores` [rows, vocab], given the ids
    generated so far [rows, steps]: a flat `presence` once a token has appeared, `frequency` per occurrence."""
    import torch

    if generated.shape[1] == 0 or (presence == 0 and frequency == 0):
        return scores
    counts = torch.zeros_like(scores, dtype=torch.float32)
    counts.scatter_add_(1, generated.long().to(scores.device), torch.ones(generated.shape, device=scores.device))
    penalty = frequency * counts + presence * (counts > 0).float()
    return (scores.float() - penalty).to(scores.dtype)


def penalty_processor_class():  # noqa: ANN201
    from transformers import LogitsProcessor

    class PresenceFrequencyPenalty(LogitsProcessor):
        """`apply_penalties` over the tokens after the (left-padded) prompt of width `prompt_len`."""

        def __init__(self, presence: float, frequency: float, prompt_len: int) -> None:
            self.presence = presence
            self.frequency = frequency
            self.prompt_len = prompt_len

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return apply_penalties(scores, input_ids[:, self.prompt_len:], self.presence, self.frequency)

    return PresenceFrequencyPenalty


def _sampler_class():  # noqa: ANN202
    import torch
    from transformers import LogitsProcessor

    class SeededRowSampler(LogitsProcessor):
        """Draws each row's next token from its own generator, then hands greedy search a one-hot.

        Runs after the temperature/top-k/top-p warpers, so the distribution is HF's; only the
        random draw is per row. Inverse CDF with u scaled by the row's total mass, so a token of
        probability 0 can never be picked.
        """

        def __init__(self, generators: list[torch.Generator]) -> None:
            self.generators = generators

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            probs = torch.softmax(scores.float(), dim=-1)
            cdf = probs.cumsum(dim=-1)
            u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
            u = (u.to(cdf.device) * cdf[:, -1].double()).float().unsqueeze(1)
            idx = torch.searchsorted(cdf, u, right=True).clamp(max=scores.shape[-1] - 1)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, idx, 0.0)

    return SeededRowSampler


class HFGenerator:
    def __init__(self, spec: GenerateSpec, model: Any, tokenizer: Any, device: str) -> None:
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.torch = torch
        self.spec = spec
        self.model = model
        self.tok = tokenizer
        self.device = device
        self.eos = stop_ids(getattr(model.generation_config, "eos_token_id", None), tokenizer, spec.template == "chat")
        # A fresh config: the model's own sampling defaults (e.g. temperature 0.6 in generation_config.json) must not
        # leak in; the spec is the whole truth and is recorded.
        self.gc = GenerationConfig(max_new_tokens=spec.max_new_tokens, do_sample=False, num_beams=1,
                                   repetition_penalty=spec.repetition_penalty, eos_token_id=self.eos,
                                   pad_token_id=tokenizer.pad_token_id)
        # transformers 5 fills every field a passed config does not set explicitly from model.generation_config
        # (a checkpoint's no_repeat_ngram_size or min_new_tokens would apply on top of ours), so it is replaced.
        model.generation_config = self.gc
        self.sampling = spec.temperature > 0
        self.warpers: list[Any] = []
        if self.sampling:
            if spec.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(spec.temperature))
            if spec.top_k > 0:
                self.warpers.append(TopKLogitsWarper(spec.top_k))
            if spec.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(spec.top_p))
        self.Processors = LogitsProcessorList
        self.Sampler = _sampler_class()
        self.Penalty = penalty_processor_class()

    def generate(self, items: list[Any]) -> list[list[tuple[str, int, bool]]]:
        """For each item, n (text, generated token count, finished with eos) in sample order."""
        torch = self.torch
        n = self.spec.n
        seqs = [it.ids for it in items for _ in range(n)]
        ids, mask, _ = pad(seqs, self.tok.pad_token_id, "left")
        processors = self.Processors([])
        if self.spec.presence_penalty or self.spec.frequency_penalty:
            processors.append(self.Penalty(self.spec.presence_penalty, self.spec.frequency_penalty, ids.shape[1]))
        processors.extend(self.warpers)
        if self.sampling:
            gens = []
            for it in items:
                for j in range(n):
                    g = torch.Generator(device="cpu")
                    g.manual_seed(row_seed(self.spec.seed, it.key, j))
                    gens.append(g)
            processors.append(self.Sampler(gens))
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      generation_config=self.gc, logits_processor=processors)
        new = out[:, ids.shape[1]:].tolist()
        eos = set(self.eos)
        results: list[list[tuple[str, int, bool]]] = []
        for r in range(len(items)):
            samples = []
            for j in range(n):
                toks = new[r * n + j]
                cut = next((k for k, t in enumerate(toks) if t in eos), None)
                finished = cut is not None
                body = toks[:cut] if finished else toks
                text = self.tok.decode(body, skip_special_tokens=True)
                samples.append((text.strip() if self.spec.strip_response else text,
                                len(body) + (1 if finished else 0), finished))
            results.append(samples)
        return results
