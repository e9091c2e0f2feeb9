"""Arena-Hard v0.1 pairwise judge (docs/science.md §7.3): two games per prompt, a five-point verdict.

Game 0 shows the baseline as assistant A and the model as B; game 1 swaps them. The verdict is
parsed from `[[...]]` (`engine.metrics.arena_hard`); the win rate (ties as half, a decisive
verdict as three battles) is aggregated by the score job.

Endpoint judge: Arena-Hard's system prompt and user template, temperature 0, up to 4096 tokens,
as `arena-hard-auto` sends them, both games of a batch in flight together through the shared
concurrent client (`endpoint.py`: `max_concurrency`, Retry-After, budgets, the resume cache).
Local judge (a stand-in): the same messages, then the verdict
whose tokens are most likely after "My final verdict is " — a tiny or small model cannot write
the judgment Arena-Hard asks for first, so its numbers are labelled as not Arena-Hard's.
"""

from __future__ import annotations

import json
import os
from typing import Any

from engine.jobs._batching import pad
from engine.jobs._loading import load_causal_lm, load_tokenizer, model_record, require_chat_template
from engine.jobs._prompts import apply_chat
from engine.jobs.scorers.base import Item, Scorer
from engine.jobs.scorers.endpoint import chat_completions, endpoint_batches, make_client

# arena-hard-auto's judge_config.yaml (v0.1, judge gpt-4-1106-preview): system_prompt and prompt_template.
ARENA_HARD_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your job is to "
    "evaluate which assistant's answer is better.\n\n"
    "Begin your evaluation by generating your own answer to the prompt. You must provide your answers before judging "
    "any answers.\n\n"
    "When evaluating the assistants' answers, compare both assistants' answers with your answer. You must identify and "
    "correct any mistakes or inaccurate information.\n\n"
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful means the answer correctly "
    "responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or more than one "
    "interpretation, it is more helpful and appropriate to ask for clarifications or more information from the user "
    "than providing an answer based on assumptions. Relevant means all parts of the response closely connect or are "
    "appropriate to what is being asked. Concise means the response is clear and not verbose or excessive.\n\n"
    "Then consider the creativity and novelty of the assistant's answers when needed. Finally, identify any missing "
    "important information in the assistants' answers that would be beneficial to include when responding to the user "
    "prompt.\n\n"
    "After providing your explanation, you must output only one of the following choices as your final verdict with a "
    "label:\n\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'Example output: "My final verdict is tie: [[A=B]]".'
)
ARENA_HARD_USER = (
    "<|User Prompt|>\n{question_1}\n\n"
    "<|The Start of Assistant A's Answer|>\n{answer_1}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{answer_2}\n<|The End of Assistant B's Answer|>"
)
VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")
LOCAL_LEAD = "My final verdict is "


def arena_hard_messages(question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    user = ARENA_HARD_USER.replace("{question_1}", question).replace("{answer_1}", answer_a).replace("{answer_2}", answer_b)
    return [{"role": "system", "content": ARENA_HARD_SYSTEM}, {"role": "user", "content": user}]


def game_messages(question: str, baseline: str, model: str, game: int) -> list[dict[str, str]]:
    """Game 0: A = baseline, B = model; game 1: A = model, B = baseline (§7.3)."""
    return arena_hard_messages(question, baseline, model) if game == 0 else arena_hard_messages(question, model, baseline)


class ArenaHardScorer(Scorer):
    def __post_init__(self) -> None:
        self.fields = ("arena_hard_verdict_0", "arena_hard_verdict_1", "arena_hard_judgment_0", "arena_hard_judgment_1")

    def required_fields(self) -> dict[str, str | None]:
        return {"scorers[arena_hard].reference_field": self.spec.reference_field}

    def prepare(self, items: list[Item]) -> None:
        super().prepare(items)
        s = self.spec
        self.questions = [it.user(self.join) for it in items]
        self.refs = [str(it.record.get(s.reference_field) or "") for it in items]
        baseline = (s.baseline.model_dump() if s.baseline else {"model": "unrecorded"})
        baseline["field"] = baseline.get("field") or s.reference_field
        self.too_long = 0
        self.info = {"prompt": "arena-hard-auto v0.1 judge_config (system_prompt, prompt_template)",
                     "games": "game 0: A = baseline, B = model; game 1: A = model, B = baseline",
                     "verdicts": list(VERDICTS), "decisive_weight": 3, "ties": "half a win", "baseline": baseline}
        if s.model is None:
            self.api_key = os.environ.get(s.api_key_env)
            self.client = make_client(s, self.api_key, self.outputs)
            self.ids = None
            self.info["judge"] = {"endpoint": s.endpoint, "model": s.endpoint_model, "temperature": s.temperature,
                                  "max_tokens": s.max_tokens, "api_key_env": s.api_key_env if self.api_key else None}
            self.info["label"] = f"Arena-Hard v0.1 (judge {s.endpoint_model})"
            return
        import torch

        self.torch = torch
        self.tok = load_tokenizer(s.model, "right", "judge model")
        require_chat_template(self.tok, s.model, "judge model")
        self.model = load_causal_lm(s.model, self.device, "judge model")
        self.cands = [self.tok(f"[[{v}]]", add_special_tokens=False)["input_ids"] for v in VERDICTS]
        self.ids = []
        for it, q, ref in zip(items, self.questions, self.refs, strict=True):
            games = []
            for g in (0, 1):
                text = apply_chat(self.tok, game_messages(q, ref, it.response, g), True) + LOCAL_LEAD
                games.append(self.tok(text, add_special_tokens=False)["input_ids"])
            self.ids.append(games)
        self.info["judge"] = {**model_record(s.model, self.model, self.device), "verdict": f"argmax over the five "
                              f"verdicts of log p('[[V]]' | prompt + {LOCAL_LEAD!r})"}
        self.info["label"] = f"Arena-Hard-style (LOCAL judge {s.model.path}; not Arena-Hard's judge)"

    def lengths(self, idxs: list[int]) -> list[int]:
        return [1] * len(idxs) if self.ids is None else [len(self.ids[i][0]) + len(self.ids[i][1]) for i in idxs]

    def batches(self, idxs: list[int]) -> list[list[int]]:
        if self.ids is None:
            return endpoint_batches(idxs, self.spec.max_concurrency)
        return super().batches(idxs)

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        if self.ids is None:  # both games of the whole batch in flight together, answers in order
            replies = chat_completions(self.client, [self._body(i, g) for i in idxs for g in (0, 1)])
            texts = [_content(data) for data in replies]
            return [{"arena_hard_verdict_0": parse(texts[2 * k]), "arena_hard_judgment_0": texts[2 * k],
                     "arena_hard_verdict_1": parse(texts[2 * k + 1]), "arena_hard_judgment_1": texts[2 * k + 1]}
                    for k in range(len(idxs))]
        out = []
        for i in idxs:
            row: dict[str, Any] = {}
            for g in (0, 1):
                row[f"arena_hard_verdict_{g}"] = self._local(i, g)
                row[f"arena_hard_judgment_{g}"] = None
            out.append(row)
        self.info["too_long"] = self.too_long
        return out

    def _local(self, i: int, game: int) -> str | None:
        torch = self.torch
        prompt = self.ids[i][game]
        if len(prompt) + max(map(len, self.cands)) > self.spec.max_length:
            self.too_long += 1
            return None
        rows = [prompt + c for c in self.cands]
        ids, mask, _ = pad(rows, self.tok.pad_token_id, "right")
        self.stats.add_batch(rows)
        self.stats.start()
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
        lp = torch.log_softmax(logits, dim=-1)
        totals = []
        for r, c in enumerate(self.cands):
            pos = range(len(prompt) - 1, len(prompt) - 1 + len(c))
            totals.append(sum(lp[r, p, c[k]].item() for k, p in enumerate(pos)))
        self.stats.stop()
        return VERDICTS[max(range(len(VERDICTS)), key=lambda k: totals[k])]

    def _body(self, i: int, game: int) -> dict[str, Any]:
        s = self.spec
        return {"model": s.endpoint_model, "temperature": s.temperature, "max_tokens": s.max_tokens,
                "messages": game_messages(self.questions[i], self.refs[i], self.items[i].response, game)}


def _content(data: dict[str, Any]) -> str:
    try:
        return str(data["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError) as e:
        raise RuntimeError(f"arena-hard judge endpoint returned no message: {json.dumps(data)[:200]}") from e


def parse(judgment: str | None) -> str | None:
    """The verdict of a judgment, as arena-hard-auto's `get_score` reads it (all [[...]] matches must agree)."""
    from engine.metrics import parse_arena_hard_verdict

    v = parse_arena_hard_verdict(judgment)
    return v if v in VERDICTS else None
