"""Correctness labels of generated answers (docs/science.md §10.1): the MC substring rule, a normalised
match, or an equivalency judge (local model or OpenAI-compatible endpoint).
"""

from __future__ import annotations

import json
import os
from typing import Any

from engine.jobs._batching import pad
from engine.jobs._loading import load_causal_lm, load_tokenizer, model_record, require_chat_template
from engine.jobs._prompts import apply_chat
from engine.jobs._uncertainty import sanitize_answer
from engine.jobs.scorers.base import Item, Scorer
from engine.jobs.scorers.endpoint import chat_completions, endpoint_batches, make_client

# calibration-tuning's grader (llm/datasets/llm_utils_oe.py: SYSTEM_PROMPT_ORACLE_EQUIVALENCY and
# PROMPT_ANSWER_KEY_EQUIVALENCY, read at commit 02379f8804affabd015b77997a25e59d423598ba), byte for byte, with its
# <question>/<ground-truth>/<prediction> slots written {question}/{target}/{answer}. Its request sets no temperature
# or max_tokens (the API defaults), and y = 1 if "yes" is in the stripped, lower-cased reply.
CORRECTNESS_SYSTEM = "You are an automated grading assistant helping a teacher grade student answers."
CORRECTNESS_PROMPT = (
    "The problem is: {question}\n\n The correct answer for this problem is: {target}\n "
    "A student submitted the answer: {answer}\n "
    "The student's answer must be correct and specific but not overcomplete "
    "(for example, if they provide two different answers, they did not get the question right). "
    "However, small differences in formatting should not be penalized (for example, 'New York City' is equivalent to "
    "'NYC'). Did the student provide an equivalent answer to the ground truth? Please answer yes or no without any "
    "explanation: "
)


def fill_prompt(template: str, question: str, target: str, answer: str) -> str:
    """The grader's slots filled in its own order (ground truth, prediction, question), by plain replacement."""
    return template.replace("{target}", target).replace("{answer}", answer).replace("{question}", question)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def correct_by_rule(answer: str, target: str, mode: str) -> int:
    """§10.1 'substring' (MC: `target in prediction`, case-sensitive) or normalised exact match."""
    if mode == "substring":
        return int(target in answer)
    if mode == "normalized":
        return int(normalize_answer(answer) == normalize_answer(target))
    raise ValueError(f"mode: {mode!r} is not a rule (substring, normalized)")


def judge_says_yes(reply: str) -> int:
    """§10.1: y = 1 if 'yes' appears in the lower-cased reply."""
    return int("yes" in reply.lower())


class CorrectnessScorer(Scorer):
    """y in {0, 1} for every generated answer (§10.1): substring (MC), normalized match, or an equivalency judge."""

    def __post_init__(self) -> None:
        self.fields = (self.spec.field, f"{self.spec.field}_reply") if self.spec.mode == "judge" else (self.spec.field,)

    @property
    def key(self) -> str:
        return "correctness"

    def required_fields(self) -> dict[str, str | None]:
        out = {"scorers[correctness].target_field": self.spec.target_field}
        if self.spec.question_field:
            out["scorers[correctness].question_field"] = self.spec.question_field
        return out

    def prepare(self, items: list[Item]) -> None:
        super().prepare(items)
        s = self.spec
        self.answers = [sanitize_answer(it.response) if s.sanitize else it.response for it in items]
        self.targets = [str(it.record.get(s.target_field, "")) for it in items]
        self.questions = [str(it.record.get(s.question_field)) if s.question_field else it.user(self.join) for it in items]
        prompt = s.judge_prompt or CORRECTNESS_PROMPT
        self.info = {"mode": s.mode, "field": s.field, "sanitize": s.sanitize, "target_field": s.target_field}
        self.ids = None
        if s.mode != "judge":
            self.info["rule"] = {"substring": "target in answer (case-sensitive, §10.1 MC)",
                                 "normalized": "normalize(answer) == normalize(target), SQuAD-style (UNPINNED)"}[s.mode]
            return
        self.messages = [[{"role": "system", "content": CORRECTNESS_SYSTEM},
                          {"role": "user", "content": fill_prompt(prompt, q, t, a)}]
                         for q, t, a in zip(self.questions, self.targets, self.answers, strict=True)]
        self.info.update(system=CORRECTNESS_SYSTEM, prompt=prompt,
                         prompt_source="judge_prompt (given in the spec)" if s.judge_prompt else
                         "calibration-tuning's PROMPT_ANSWER_KEY_EQUIVALENCY (llm/datasets/llm_utils_oe.py)",
                         temperature=s.temperature if s.temperature is not None else "endpoint default (1.0 on OpenAI), "
                         "as calibration-tuning sends none",
                         rule="y = 1 if 'yes' in the lower-cased reply", max_new_tokens=s.max_new_tokens)
        if s.model is not None:
            import torch

            self.torch = torch
            self.tok = load_tokenizer(s.model, "left", "judge model")
            require_chat_template(self.tok, s.model, "judge model")
            self.model = load_causal_lm(s.model, self.device, "judge model")
            self.ids = [self.tok(apply_chat(self.tok, m, True), add_special_tokens=False)["input_ids"][-s.max_length:]
                        for m in self.messages]
            self.info["judge"] = {**model_record(s.model, self.model, self.device),
                                  "label": "LOCAL replacement judge (not GPT-3.5-Turbo-1106)"}
        else:
            self.api_key = os.environ.get(s.api_key_env)
            self.client = make_client(s, self.api_key, self.outputs)
            self.info["judge"] = {"endpoint": s.endpoint, "model": s.endpoint_model,
                                  "api_key_env": s.api_key_env if self.api_key else None}

    def lengths(self, idxs: list[int]) -> list[int]:
        return [1] * len(idxs) if self.ids is None else [len(self.ids[i]) for i in idxs]

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        s = self.spec
        if s.mode != "judge":
            return [{s.field: correct_by_rule(self.answers[i], self.targets[i], s.mode)} for i in idxs]
        replies = self._local(idxs) if self.ids is not None else self._http(idxs)
        return [{s.field: judge_says_yes(r), f"{s.field}_reply": r} for r in replies]

    def _local(self, idxs: list[int]) -> list[str]:
        torch = self.torch
        rows = [self.ids[i] for i in idxs]
        ids, mask, _ = pad(rows, self.tok.pad_token_id, "left")
        self.stats.add_batch(rows)
        self.stats.start()
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=self.spec.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tok.pad_token_id)
        self.stats.stop()
        return self.tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)

    def batches(self, idxs: list[int]) -> list[list[int]]:
        if self.spec.mode == "judge" and self.spec.endpoint is not None:
            return endpoint_batches(idxs, self.spec.max_concurrency)
        return super().batches(idxs)

    def _http(self, idxs: list[int]) -> list[str]:
        s = self.spec
        bodies = []
        for i in idxs:
            body: dict[str, Any] = {"model": s.endpoint_model, "messages": self.messages[i]}
            if s.temperature is not None:  # calibration-tuning sends neither temperature nor max_tokens
                body["temperature"] = s.temperature
            bodies.append(body)
        out = []
        for data in chat_completions(self.client, bodies):
            try:
                out.append(str(data["choices"][0]["message"]["content"] or ""))
            except (KeyError, IndexError, TypeError) as e:
                raise RuntimeError(f"correctness judge endpoint returned no message: {json.dumps(data)[:200]}") from e
        return out
