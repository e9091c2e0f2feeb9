"""P(correct) of each answer (docs/science.md §10.2-§10.3): the zero-shot uncertainty query on a model, or a
trained estimator loaded from a calibration job's output.

Convention: left padding, next-token logits at position −1 restricted to the "i"/"ii" tokens.
"""

from __future__ import annotations

from typing import Any

from engine.jobs._batching import pad
from engine.jobs._common import JobInputError
from engine.jobs._loading import load_causal_lm, load_tokenizer, model_record, require_chat_template
from engine.jobs._prompts import apply_chat
from engine.jobs._uncertainty import (
    QUERY_SUFFIX,
    Estimator,
    choice_token_ids,
    parse_label,
    query_text,
    read_estimator_info,
    sanitize_answer,
)
from engine.jobs.scorers.base import Item, Scorer
from engine.jobs.scorers.correctness import correct_by_rule


class ConfidenceScorer(Scorer):
    """P(correct) of each answer (§10.2-§10.3): the zero-shot uncertainty query on `model`, or a trained `estimator`.

    Fields: `confidence` (P(correct), raw), `confidence_ts` (after the estimator's temperature; equal to the raw
    value for the zero-shot query, which has none), `confidence_label` (y) and `confidence_logits` (the 2-way logits).
    """

    def __post_init__(self) -> None:
        self.fields = ("confidence", "confidence_ts", "confidence_label", "confidence_logits")

    def required_fields(self) -> dict[str, str | None]:
        out = {"scorers[confidence].question_field": self.spec.question_field}
        if self.spec.target_field is None:
            out["scorers[confidence].label_field"] = self.spec.label_field
        return out

    def _labels(self, items: list[Item]) -> list[int]:
        s = self.spec
        labels = []
        for n, it in enumerate(items):
            rec = it.record
            if s.label_field in rec and rec[s.label_field] is not None:
                labels.append(parse_label(rec[s.label_field], n, s.label_field, "records"))
            elif s.target_field and s.target_field in rec:
                answer = sanitize_answer(it.response) if s.sanitize else it.response
                labels.append(correct_by_rule(answer, str(rec[s.target_field]), "substring"))  # §10.1 MC rule
            else:
                need = s.label_field + (f" or {s.target_field!r}" if s.target_field else "")
                raise JobInputError(f"records: record {n} has no correctness label {need}; set label_field/target_field")
        return labels

    def prepare(self, items: list[Item]) -> None:
        import torch

        super().prepare(items)
        s = self.spec
        self.torch = torch
        self.labels = self._labels(items)
        pairs = [(str(it.record.get(s.question_field)) if s.question_field else it.user(self.join),
                  sanitize_answer(it.response) if s.sanitize else it.response) for it in items]
        common = {"sanitize": s.sanitize, "truncated": 0,
                  "label_source": s.label_field if s.target_field is None else f"{s.label_field}|substring"}
        if s.estimator is not None:
            from engine.specs.common import ModelRef

            info = read_estimator_info(s.estimator, "scorers[confidence].estimator")
            base = s.model or ModelRef(path=info["base_model"])
            self.est = Estimator(s.estimator, base, self.device, "scorers[confidence].estimator")
            self.temperature = self.est.temperature
            self.tok = self.est.tok
            self.ids = []
            for c, p in pairs:
                ids, cut = self.est.encode(c, p, s.max_length)
                self.ids.append(ids)
                common["truncated"] += int(cut)
            self.info = {"method": self.est.style, "estimator": self.est.describe(), "padding_side": "right", **common}
            return
        self.est = None
        self.temperature = 1.0
        self.tok = load_tokenizer(s.model, "left")
        if s.chat_template:
            require_chat_template(self.tok, s.model)
        self.tok_i, self.tok_ii = choice_token_ids(self.tok, f"model {s.model.path}")
        self.model = load_causal_lm(s.model, self.device)
        self.ids = []
        for c, p in pairs:
            query = query_text(c, p)
            if s.chat_template:
                query = apply_chat(self.tok, [{"role": "user", "content": query}], True)
                ids = self.tok(query, add_special_tokens=False)["input_ids"]
            else:
                ids = self.tok(query)["input_ids"]  # raw text, tokenizer defaults (§10.2)
            if len(ids) > s.max_length:
                common["truncated"] += 1
                ids = ids[-s.max_length:]
            self.ids.append(ids)
        self.info = {"method": "zero_shot", "model": model_record(s.model, self.model, self.device),
                     "query": QUERY_SUFFIX, "tokens": {"i": self.tok_i, "ii": self.tok_ii},
                     "chat_template": s.chat_template, "padding_side": "left", "temperature": None, **common}

    def lengths(self, idxs: list[int]) -> list[int]:
        return [len(self.ids[i]) for i in idxs]

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        torch = self.torch
        rows = [self.ids[i] for i in idxs]
        self.stats.add_batch(rows)
        self.stats.start()
        if self.est is not None:
            z = self.est.logits(rows)
        else:
            ids, mask, pos = pad(rows, self.tok.pad_token_id, "left")
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=pos.to(self.device)).logits[:, -1, :].float()
            z = logits[:, [self.tok_i, self.tok_ii]].cpu()
        p = torch.softmax(z, dim=-1)[:, 1].tolist()
        p_ts = torch.softmax(z / self.temperature, dim=-1)[:, 1].tolist()
        self.stats.stop()
        return [{"confidence": float(a), "confidence_ts": float(b), "confidence_label": self.labels[i],
                 "confidence_logits": zi} for i, a, b, zi in zip(idxs, p, p_ts, z.tolist(), strict=True)]
