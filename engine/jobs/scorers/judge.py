"""Pairwise judge (docs/science.md §7.1): an AlpacaEval-2-style judge from a local LM's or an endpoint's
logprobs of 'm'/'M', or a reward-model judge (a local stand-in that is not AE2).

Convention: left padding, next-token logits at position −1. Reward-model judge: the reward
conventions of `reward.py`, response and reference each scored alone (no order).
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Any

from engine.jobs._batching import pad
from engine.jobs._common import JobInputError
from engine.jobs._loading import load_causal_lm, load_tokenizer, model_record, require_chat_template
from engine.jobs._prompts import apply_chat
from engine.jobs.scorers.base import NAN, Item, Scorer, _finite
from engine.jobs.scorers.endpoint import chat_completions, endpoint_batches, make_client
from engine.jobs.scorers.reward import RewardModel

ALPACA_EVAL_SYSTEM = (
    "You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on "
    "the quality of their responses to a given instruction. This process will be used to create a leaderboard "
    "reflecting the most accurate and human-preferred answers."
)
# alpaca_eval's `alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt` (the weighted_alpaca_eval_gpt4_turbo annotator), as
# the messages alpaca_eval sends (tested byte for byte against alpaca_eval 0.6.6's own rendering).
ALPACA_EVAL_USER = """I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{{
    "instruction": \"\"\"{instruction}\"\"\",
}}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{{
    {{
        "model_identifier": "m",
        "output": \"\"\"{output_1}\"\"\"
    }},
    {{
        "model_identifier": "M",
        "output": \"\"\"{output_2}\"\"\"
    }}
}}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier"""  # alpaca_eval's prompt_to_chatml strips each message: no trailing newline


# alpaca_eval's PairwiseAnnotator names its switch column "is_switched_outputs" (kept for backward compatibility) and
# RandomSwitchTwoColumnsProcessor seeds `random.Random(switch_column + instruction + str(seed))`; the annotator seed is 0.
SWITCH_KEY = "is_switched_outputs"
# weighted_alpaca_eval_gpt4_turbo's completions_kwargs (temperature 1 has no effect on the logprobs read).
REQUEST = {"max_tokens": 1, "temperature": 1, "logprobs": True, "top_logprobs": 5}


def alpaca_is_switched(instruction: str, seed: int = 0) -> bool:
    """alpaca_eval's per-instruction order randomisation (RandomSwitchTwoColumnsProcessor with its own key string):
    the same instruction gets the same order as in alpaca_eval, for every model."""
    return random.Random(SWITCH_KEY + instruction + str(seed)).choices([False, True], k=1)[0]


def judge_messages(instruction: str, reference: str, response: str, switched: bool) -> list[dict[str, str]]:
    """Unswitched: output_1 = baseline as 'm', output_2 = model as 'M' (§7.1)."""
    o1, o2 = (response, reference) if switched else (reference, response)
    user = ALPACA_EVAL_USER.replace("{{", "\x00").replace("}}", "\x01")
    user = user.replace("{instruction}", instruction).replace("{output_1}", o1).replace("{output_2}", o2)
    user = user.replace("\x00", "{").replace("\x01", "}")
    return [{"role": "system", "content": ALPACA_EVAL_SYSTEM}, {"role": "user", "content": user}]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


class JudgeScorer(Scorer):
    """AE2-style pairwise judge (§7.1) from a local LM's or an endpoint's logprobs of 'm'/'M'; or a reward-model
    judge, P(model wins) = sigmoid((r(response) - r(reference)) / T), a local stand-in that is not AE2."""

    def __post_init__(self) -> None:
        self.fields = ("judge_preference", "judge_p_model_wins", "judge_switched", "judge_lp_m", "judge_lp_M")
        if self.spec.reward_model is not None:
            self.fields += ("judge_reward_response", "judge_reward_reference")

    def required_fields(self) -> dict[str, str | None]:
        return {"scorers[judge].reference_field": self.spec.reference_field}

    def baseline(self) -> dict[str, Any]:
        """What the reference outputs are, as the spec names them (model 'unrecorded' when it does not)."""
        s = self.spec
        out = s.baseline.model_dump() if s.baseline else {"model": "unrecorded", "dataset": None, "config": None}
        out["field"] = out.get("field") or s.reference_field
        return out

    def prepare(self, items: list[Item]) -> None:
        super().prepare(items)
        s = self.spec
        self.instr = [it.user(self.join) for it in items]
        self.refs = [str(it.record.get(s.reference_field) or "") for it in items]
        self.switched = [alpaca_is_switched(t, s.seed) for t in self.instr]
        self.too_long = 0
        if s.reward_model is not None:
            self._prepare_reward_model(items)
            return
        if s.model is not None:
            import torch

            self.torch = torch
            self.tok = load_tokenizer(s.model, "left", "judge model")
            require_chat_template(self.tok, s.model, "judge model")
            self.token_m = _single_token(self.tok, "m", s.model.path)
            self.token_M = _single_token(self.tok, "M", s.model.path)
            self.model = load_causal_lm(s.model, self.device, "judge model")
            self.ids = []
            for it, t, ref, sw in zip(items, self.instr, self.refs, self.switched, strict=True):
                text = apply_chat(self.tok, judge_messages(t, ref, it.response, sw), True)
                ids = self.tok(text, add_special_tokens=False)["input_ids"]
                self.ids.append(ids)
            judge = {**model_record(s.model, self.model, self.device), "tokens": {"m": self.token_m, "M": self.token_M}}
        else:
            self.ids = None
            key = os.environ.get(s.api_key_env)
            self.api_key = key
            self.client = make_client(s, key, self.outputs)
            judge = {"endpoint": s.endpoint, "model": s.endpoint_model, "api_key_env": s.api_key_env if key else None,
                     "request": REQUEST}
        self.info = {"judge": judge, "prompt": "alpaca_eval_clf_gpt4_turbo", "order_seed": s.seed,
                     "order_key": f"{SWITCH_KEY} + instruction + {s.seed}", "baseline": self.baseline(),
                     "switched": int(sum(self.switched)),
                     "label": f"AE2-style (judge {s.model.path if s.model else s.endpoint_model})"}

    def _prepare_reward_model(self, items: list[Item]) -> None:
        """Each item is two reward-model sequences, (user, response) and (user, reference), scored alone."""
        s = self.spec
        self.switched = [False] * len(items)  # no order: the reward model never sees the two outputs together
        self.rm = RewardModel(s.reward_model, self.device, s.max_length, s.batch_size, join=self.join)
        self.stats = self.rm.stats
        self.pairs = [(self.rm.encode(t, it.response, truncate=False), self.rm.encode(t, ref, truncate=False))
                      for it, t, ref in zip(items, self.instr, self.refs, strict=True)]
        self.ids = None
        self.info = {"judge": self.rm.describe(), "judge_kind": "reward model", "temperature": s.temperature,
                     "baseline": self.baseline(),
                     "preference": "sigmoid((r(response) - r(reference)) / temperature)", "switched": 0,
                     "label": f"RM-judge win rate (reward model {s.reward_model.path}; not AE2)"}

    def lengths(self, idxs: list[int]) -> list[int]:
        if self.spec.reward_model is not None:
            return [len(self.pairs[i][0]) + len(self.pairs[i][1]) for i in idxs]
        if self.ids is None:
            return [1] * len(idxs)
        return [len(self.ids[i]) for i in idxs]

    def _score_reward_model(self, idxs: list[int]) -> list[dict[str, Any]]:
        T = self.spec.temperature
        ok = [i for i in idxs if max(map(len, self.pairs[i])) <= self.spec.max_length]
        self.too_long += len(idxs) - len(ok)
        values = self.rm.score_ids([seq for i in ok for seq in self.pairs[i]])
        rewards = {i: (values[2 * k], values[2 * k + 1]) for k, i in enumerate(ok)}
        out = []
        for i in idxs:
            r_resp, r_ref = rewards.get(i, (NAN, NAN))
            p = _sigmoid((r_resp - r_ref) / T) if math.isfinite(r_resp - r_ref) else NAN
            out.append({"judge_preference": _finite(1.0 + p), "judge_p_model_wins": _finite(p),
                        "judge_switched": False, "judge_lp_m": None, "judge_lp_M": None,
                        "judge_reward_response": _finite(r_resp), "judge_reward_reference": _finite(r_ref)})
        self.info["too_long"] = self.too_long
        return out

    def _row(self, i: int, lp_m: float | None, lp_M: float | None) -> dict[str, Any]:
        from engine.metrics import alpaca_preference_from_logprobs

        pref = alpaca_preference_from_logprobs(lp_m, lp_M, switched=self.switched[i])
        return {"judge_preference": _finite(pref), "judge_p_model_wins": _finite(pref - 1),
                "judge_switched": self.switched[i], "judge_lp_m": _finite(lp_m) if lp_m is not None else None,
                "judge_lp_M": _finite(lp_M) if lp_M is not None else None}

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        if self.spec.reward_model is not None:
            return self._score_reward_model(idxs)
        if self.ids is None:
            replies = chat_completions(self.client, [self._body(i) for i in idxs])
            return [self._row(i, *self._logprobs(data)) for i, data in zip(idxs, replies, strict=True)]
        torch = self.torch
        out: dict[int, dict[str, Any]] = {}
        ok = [i for i in idxs if len(self.ids[i]) <= self.spec.max_length]
        for i in idxs:
            if i not in ok:
                self.too_long += 1
                out[i] = self._row(i, None, None)
        if ok:
            rows = [self.ids[i] for i in ok]
            ids, mask, pos = pad(rows, self.tok.pad_token_id, "left")
            self.stats.add_batch(rows)
            self.stats.start()
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    position_ids=pos.to(self.device)).logits[:, -1, :].float()
            lp = torch.log_softmax(logits, dim=-1)
            lp_m = lp[:, self.token_m].tolist()
            lp_M = lp[:, self.token_M].tolist()
            self.stats.stop()
            for i, a, b in zip(ok, lp_m, lp_M, strict=True):
                out[i] = self._row(i, a, b)
        self.info["too_long"] = self.too_long
        return [out[i] for i in idxs]

    def batches(self, idxs: list[int]) -> list[list[int]]:
        if self.spec.endpoint is not None:
            return endpoint_batches(idxs, self.spec.max_concurrency)
        return super().batches(idxs)

    def _body(self, i: int) -> dict[str, Any]:
        """One chat completion with max_tokens 1 and top-5 logprobs; a token not among them has probability 0."""
        s = self.spec
        return {"model": s.endpoint_model, "messages": judge_messages(self.instr[i], self.refs[i], self.items[i].response,
                                                                      self.switched[i]),
                **REQUEST}

    @staticmethod
    def _logprobs(data: dict[str, Any]) -> tuple[float | None, float | None]:
        try:
            content = data["choices"][0]["logprobs"]["content"][0]
            tops = content.get("top_logprobs") or [{"token": content["token"], "logprob": content["logprob"]}]
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"judge endpoint returned no logprobs: {json.dumps(data)[:200]}") from e
        lp = {t["token"]: float(t["logprob"]) for t in tops if "token" in t}
        return lp.get("m"), lp.get("M")


def _single_token(tok: Any, text: str, path: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise JobInputError(f"model {path}: {text!r} is {len(ids)} tokens, not one; its logprob cannot be read")
    return ids[0]
