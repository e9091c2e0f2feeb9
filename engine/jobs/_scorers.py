"""Per-sample scorers behind the score job (and the reward model behind best-of-N generation).

Each scorer turns records into a few per-sample fields; aggregation (means, CAR, win rates, ASR,
ECE, AUROC) happens in `engine.jobs.score` with the pure functions of `engine.metrics`. Model
forward passes are batched by `_batching.sorted_batches` (longest first, token budget) and report
real tokens/s and the padding fraction through `Throughput`.

Conventions pinned here, each one a place where batched scoring silently goes wrong:
- Reward: the RM's own chat template, left padding, and the score read at the last position of
  every row (HF's "rightmost non-pad token" search is disabled, so a response that ends with the
  pad/eos id is still scored at its last token, as a batch of one is). Scores are batch-size
  invariant within float tolerance (tested). §2, practices.md (reward-bench #137).
- Loss: prefix masking exactly as §0 (s = token count of P alone), right padding, natural log.
- Judge and confidence: left padding, next-token logits at position −1 (§7.1, §10.2).
- Reward-model judge: the reward conventions above, response and reference each scored alone (no order).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from engine.jobs._batching import Throughput, pad, sorted_batches
from engine.jobs._common import JobInputError
from engine.jobs._loading import (
    load_causal_lm,
    load_reward_model,
    load_tokenizer,
    model_record,
    require_chat_template,
)
from engine.jobs._prompts import apply_chat, render, user_text
from engine.jobs._uncertainty import (
    QUERY_SUFFIX,
    Estimator,
    choice_token_ids,
    parse_label,
    query_text,
    read_estimator_info,
    sanitize_answer,
)

NAN = float("nan")


def _finite(x: float) -> float | None:
    """JSON has no NaN: per-sample fields store None for 'not computed'."""
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class Item:
    """One record as the scorers see it."""

    instruction: str
    data: str
    response: str
    record: dict[str, Any]

    def user(self, join: str) -> str:
        return user_text(self.instruction, self.data, join)


# ----------------------------------------------------------------------------------------------
# Reward model (score job and best-of-N)


class RewardModel:
    """A sequence-classification RM scoring (user, assistant) pairs with its own chat template (§2)."""

    def __init__(self, ref: Any, device: str, max_length: int = 4096, batch_size: int = 8,
                 max_batch_tokens: int = 16384, join: str = "\n\n") -> None:
        import torch

        self.torch = torch
        self.ref = ref
        self.device = device
        self.tok = load_tokenizer(ref, "left", "reward model")
        require_chat_template(self.tok, ref, "reward model")
        self.model = load_reward_model(ref, device)
        # Read the score at the last position: with left padding that is every row's last real token.
        self.model.config.pad_token_id = -1
        if hasattr(self.model.config, "get_text_config"):
            self.model.config.get_text_config().pad_token_id = -1
        self.max_length = max_length
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.join = join
        self.stats = Throughput()
        self.truncated = 0

    def describe(self) -> dict[str, Any]:
        return {**model_record(self.ref, self.model, self.device), "padding_side": "left",
                "scored_position": "last token", "max_length": self.max_length, "template": "reward model's own"}

    def encode(self, user: str, response: str, messages: list[dict[str, str]] | None = None,
               truncate: bool = True) -> list[int]:
        conv = [*(messages or [{"role": "user", "content": user}]), {"role": "assistant", "content": response}]
        text = apply_chat(self.tok, conv, add_generation_prompt=False)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if truncate and len(ids) > self.max_length:
            self.truncated += 1
            ids = ids[: self.max_length]
        return ids

    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        """Rewards for token sequences, in the order given (batches are sorted internally)."""
        torch = self.torch
        out = [NAN] * len(seqs)
        for batch in sorted_batches([len(s) for s in seqs], self.batch_size, self.max_batch_tokens):
            rows = [seqs[i] for i in batch]
            ids, mask, pos = pad(rows, self.tok.pad_token_id, "left")
            self.stats.add_batch(rows)
            self.stats.start()
            with torch.inference_mode():
                res = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                 position_ids=pos.to(self.device))
            # ArmoRM-style custom heads return `.score`; standard classifiers return logits[:, 0] (§2).
            values = res.score if getattr(res, "score", None) is not None else res.logits[:, 0]
            values = values.float().reshape(len(rows), -1)[:, 0].tolist()
            self.stats.stop()
            for i, v in zip(batch, values, strict=True):
                out[i] = float(v)
        return out

    def score_pairs(self, pairs: list[tuple[str, str]]) -> list[float]:
        return self.score_ids([self.encode(u, r) for u, r in pairs])


# ----------------------------------------------------------------------------------------------
# The scorer interface of the score job


@dataclass
class Scorer:
    """Base: `prepare` checks and tokenizes (raising JobInputError), `score` does one batch of indices."""

    spec: Any
    join: str
    device: str = "cpu"
    stats: Throughput = field(default_factory=Throughput)
    info: dict[str, Any] = field(default_factory=dict)
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Subclasses set `fields` here (a dataclass runs it only if the decorated base defines it)."""

    @property
    def key(self) -> str:
        return self.spec.type

    def params(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    def required_fields(self) -> dict[str, str | None]:
        return {}

    def prepare(self, items: list[Item]) -> None:
        self.items = items

    def lengths(self, idxs: list[int]) -> list[int]:
        return [1] * len(idxs)

    def batches(self, idxs: list[int]) -> list[list[int]]:
        """Batches of record indices, longest first."""
        lens = self.lengths(idxs)
        bs = getattr(self.spec, "batch_size", 256)
        budget = getattr(self.spec, "max_batch_tokens", None)
        return [[idxs[j] for j in b] for b in sorted_batches(lens, bs, budget)]

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        raise NotImplementedError


class RewardScorer(Scorer):
    def __post_init__(self) -> None:
        self.fields = (self.spec.field,)

    @property
    def key(self) -> str:
        return f"reward:{self.spec.field}"

    def prepare(self, items: list[Item]) -> None:
        super().prepare(items)
        s = self.spec
        self.rm = RewardModel(s.model, self.device, s.max_length, s.batch_size, s.max_batch_tokens, self.join)
        self.stats = self.rm.stats
        self.ids = [self.rm.encode(it.user(self.join), it.response) for it in items]
        self.info = {"reward_model": self.rm.describe(), "truncated": self.rm.truncated}

    def lengths(self, idxs: list[int]) -> list[int]:
        return [len(self.ids[i]) for i in idxs]

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        values = self.rm.score_ids([self.ids[i] for i in idxs])
        return [{self.spec.field: _finite(v)} for v in values]


class LossScorer(Scorer):
    """L(A|Q), PPL(A|Q) and with `ifd` L(A), PPL(A), IFD (loss and PPL forms): §0, §1."""

    def __post_init__(self) -> None:
        p = self.spec.prefix
        f = [p, f"{p}_ppl", f"{p}_tokens"]
        if self.spec.ifd:
            f += [f"{p}_uncond", f"{p}_uncond_ppl", f"{p}_ifd", f"{p}_ifd_loss", f"{p}_ifd_ppl"]
        self.fields = tuple(f)

    @property
    def key(self) -> str:
        return f"loss:{self.spec.prefix}"

    def prepare(self, items: list[Item]) -> None:
        import torch

        super().prepare(items)
        s = self.spec
        self.torch = torch
        self.tok = load_tokenizer(s.model, "right")
        if s.template == "chat":
            require_chat_template(self.tok, s.model)
        self.model = load_causal_lm(s.model, self.device)
        eos = self.tok.eos_token or ""
        self.cond: list[tuple[list[int], int]] = []
        self.uncond: list[tuple[list[int], int]] = []
        truncated = merged = no_tokens = 0
        for it in items:
            prompt = render(s.template, self.tok, it.instruction, it.data, join=self.join)
            target = it.response + (eos if s.append_eos else "")
            p_ids = self.tok(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]
            ids = self.tok(prompt.text + target, add_special_tokens=prompt.add_special_tokens)["input_ids"]
            start = len(p_ids)  # §0: s = token count of P alone (Superfiltering)
            if ids[:start] != p_ids:
                merged += 1  # a token straddles the P|A boundary; s follows §0 regardless
            if len(ids) > s.max_length:
                truncated += 1
                ids = ids[: s.max_length]
            if start >= len(ids):
                no_tokens += 1
            self.cond.append((ids, start))
            if s.ifd:
                # §0 unconditional variant: A alone, labels = input_ids, so HF's shift leaves the first token
                # unscored (or, with a BOS, scores every token of A given BOS).
                u_ids = self.tok(target, add_special_tokens=True)["input_ids"][: s.max_length]
                self.uncond.append((u_ids, 1))
        self.info = {
            "model": model_record(s.model, self.model, self.device),
            "template": s.template,
            "input_join": self.join if s.template in ("chat", "raw") else None,
            "append_eos": s.append_eos,
            "max_length": s.max_length,
            "truncated": truncated,
            "no_response_tokens": no_tokens,
            "boundary_merges": merged,
            "ifd_form": s.ifd_form if s.ifd else None,
            "unconditional": "A alone, labels=input_ids (Superfiltering)" if s.ifd else None,
            "padding_side": "right",
        }

    def lengths(self, idxs: list[int]) -> list[int]:
        return [len(self.cond[i][0]) + (len(self.uncond[i][0]) if self.uncond else 0) for i in idxs]

    def _nll(self, pairs: list[tuple[list[int], int]]) -> list[tuple[float, int]]:
        """(sum of token NLL over positions >= start, number of such tokens) per sequence."""
        torch = self.torch
        import torch.nn.functional as F

        rows = [p[0] for p in pairs]
        ids, mask, _ = pad(rows, self.tok.pad_token_id, "right")
        self.stats.add_batch(rows)
        self.stats.start()
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        out = []
        for r, (seq, start) in enumerate(pairs):
            n = len(seq) - max(start, 1)
            if n <= 0:
                out.append((NAN, 0))
                continue
            first = max(start, 1)
            # logits at t-1 predict token t; score t = first .. len-1 (labels of prefix positions are -100).
            lg = logits[r, first - 1 : len(seq) - 1].float()
            tgt = ids[r, first : len(seq)].to(lg.device)
            nll = F.cross_entropy(lg, tgt, reduction="sum").item()
            out.append((nll, n))
        self.stats.stop()
        return out

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        from engine.metrics import ifd

        p = self.spec.prefix
        cond = self._nll([self.cond[i] for i in idxs])
        unc = self._nll([self.uncond[i] for i in idxs]) if self.spec.ifd else [None] * len(idxs)
        out = []
        for (c_sum, c_n), u in zip(cond, unc, strict=True):
            loss = c_sum / c_n if c_n else NAN
            row = {p: _finite(loss), f"{p}_ppl": _finite(math.exp(loss)) if c_n else None, f"{p}_tokens": c_n}
            if u is not None:
                u_loss = u[0] / u[1] if u[1] else NAN
                row[f"{p}_uncond"] = _finite(u_loss)
                row[f"{p}_uncond_ppl"] = _finite(math.exp(u_loss)) if u[1] else None
                ok = c_n and u[1] and u_loss > 0
                by_form = {"loss": _finite(float(ifd(loss, u_loss, form="loss"))) if ok else None,
                           "ppl": _finite(float(ifd(loss, u_loss, form="ppl"))) if c_n and u[1] else None}
                row[f"{p}_ifd"] = by_form[self.spec.ifd_form]  # the headline form, recorded as UNPINNED (§1.1)
                row[f"{p}_ifd_loss"] = by_form["loss"]
                row[f"{p}_ifd_ppl"] = by_form["ppl"]
            out.append(row)
        return out


class LengthScorer(Scorer):
    def __post_init__(self) -> None:
        self.fields = ("length_chars", "length_tokens") if self.spec.tokenizer else ("length_chars",)

    def prepare(self, items: list[Item]) -> None:
        super().prepare(items)
        self.tok = None
        if self.spec.tokenizer:
            from engine.specs.common import ModelRef

            self.tok = load_tokenizer(ModelRef(path=self.spec.tokenizer), "right", "tokenizer")
        self.info = {"tokenizer": self.spec.tokenizer, "chars": "len(str)"}

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        out = []
        for i in idxs:
            r = self.items[i].response
            row: dict[str, Any] = {"length_chars": len(r)}
            if self.tok is not None:
                row["length_tokens"] = len(self.tok(r, add_special_tokens=False)["input_ids"])
            out.append(row)
        return out


class InjectionScorer(Scorer):
    def __post_init__(self) -> None:
        self.fields = ("injection_begin_with", "injection_in_response")

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        from engine.metrics import injection_succeeded

        kw = self.spec.keyword
        return [
            {"injection_begin_with": injection_succeeded(self.items[i].response, "begin_with", kw),
             "injection_in_response": injection_succeeded(self.items[i].response, "in_response", kw)}
            for i in idxs
        ]


# ----------------------------------------------------------------------------------------------
# Pairwise judge (§7.1)

ALPACA_EVAL_SYSTEM = (
    "You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on "
    "the quality of their responses to a given instruction. This process will be used to create a leaderboard "
    "reflecting the most accurate and human-preferred answers."
)
# alpaca_eval's `alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt` (the weighted_alpaca_eval_gpt4_turbo annotator).
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

## Best Model Identifier
"""


def alpaca_is_switched(instruction: str, seed: int = 0) -> bool:
    """alpaca_eval's per-instruction order randomisation (RandomSwitchTwoColumnsProcessor): seeded on the
    instruction text, so the same instruction is shown the same way to every model."""
    return random.Random("is_switch_output_1_output_2" + instruction + str(seed)).choices([False, True], k=1)[0]


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
            judge = {"endpoint": s.endpoint, "model": s.endpoint_model, "api_key_env": s.api_key_env if key else None}
        self.info = {"judge": judge, "prompt": "alpaca_eval_clf_gpt4_turbo", "order_seed": s.seed,
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
            return [self._row(i, *self._http(i)) for i in idxs]
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

    def _http(self, i: int) -> tuple[float | None, float | None]:
        """One chat completion with max_tokens 1 and top-5 logprobs; a token not among them has probability 0."""
        s = self.spec
        body = {"model": s.endpoint_model, "messages": judge_messages(self.instr[i], self.refs[i], self.items[i].response,
                                                                      self.switched[i]),
                "max_tokens": 1, "temperature": 1, "logprobs": True, "top_logprobs": 5}
        data = _post_json(s.endpoint.rstrip("/") + "/chat/completions", body, self.api_key, s.timeout_s, s.max_retries)
        try:
            content = data["choices"][0]["logprobs"]["content"][0]
            tops = content.get("top_logprobs") or [{"token": content["token"], "logprob": content["logprob"]}]
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"judge endpoint returned no logprobs: {json.dumps(data)[:200]}") from e
        lp = {t["token"]: float(t["logprob"]) for t in tops if "token" in t}
        return lp.get("m"), lp.get("M")


def _post_json(url: str, body: dict[str, Any], api_key: str | None, timeout: float, retries: int) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    payload = json.dumps(body).encode("utf-8")
    delay = 1.0
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=payload, headers=headers, method="POST")  # noqa: S310 - URL checked in spec
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            if e.code in (429, 500, 502, 503, 504) and attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            detail = e.read().decode("utf-8", "replace")[:200] if e.fp else ""
            if e.code in (400, 401, 403, 404):
                raise JobInputError(f"judge endpoint {url}: HTTP {e.code} {detail}".strip()) from e
            raise
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            if attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            raise RuntimeError(f"judge endpoint {url}: {e}") from e
    raise AssertionError("unreachable")


def _single_token(tok: Any, text: str, path: str) -> int:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise JobInputError(f"model {path}: {text!r} is {len(ids)} tokens, not one; its logprob cannot be read")
    return ids[0]


# ----------------------------------------------------------------------------------------------
# Calibration (§10): correctness labels of generated answers, and P(correct) from an estimator

# Kept under their old names for callers of this module; the definitions live in _uncertainty.
UNCERTAINTY_QUERY = QUERY_SUFFIX

CORRECTNESS_SYSTEM = "You are an automated grading assistant helping a teacher grade student answers."
# science.md §10.1 describes PROMPT_ANSWER_KEY_EQUIVALENCY (llm/datasets/llm_utils_oe.py in CT-REPO) but does not quote
# it. This is a reconstruction from that description, recorded as such with every result; paste the verbatim string
# into the scorer's `judge_prompt` to reproduce the paper's labels exactly.
CORRECTNESS_PROMPT = (
    "The problem is: {question}\n\n"
    "The correct answer for this problem is: {target}\n\n"
    "A student submitted the answer: {answer}\n\n"
    "The student's answer must be correct and specific but not overcomplete (for example, if they provide two "
    "different answers, they did not get the question right). However, small differences in formatting should not "
    "be penalized (for example, 'New York City' is equivalent to 'NYC'). "
    "Did the student provide an equivalent answer to the ground truth? Please answer yes or no without any "
    "explanation: "
)


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
                          {"role": "user", "content": prompt.format(question=q, target=t, answer=a)}]
                         for q, t, a in zip(self.questions, self.targets, self.answers, strict=True)]
        self.info.update(system=CORRECTNESS_SYSTEM, prompt=prompt,
                         prompt_source="judge_prompt (given in the spec)" if s.judge_prompt else
                         "reconstructed from science.md §10.1's description, NOT CT-REPO's verbatim PROMPT_ANSWER_KEY_EQUIVALENCY",
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
            self.info["judge"] = {"endpoint": s.endpoint, "model": s.endpoint_model,
                                  "api_key_env": s.api_key_env if self.api_key else None}

    def lengths(self, idxs: list[int]) -> list[int]:
        return [1] * len(idxs) if self.ids is None else [len(self.ids[i]) for i in idxs]

    def score(self, idxs: list[int]) -> list[dict[str, Any]]:
        s = self.spec
        if s.mode != "judge":
            return [{s.field: correct_by_rule(self.answers[i], self.targets[i], s.mode)} for i in idxs]
        replies = self._local(idxs) if self.ids is not None else [self._http(i) for i in idxs]
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

    def _http(self, i: int) -> str:
        s = self.spec
        body = {"model": s.endpoint_model, "messages": self.messages[i], "temperature": 0,
                "max_tokens": s.max_new_tokens}
        data = _post_json(s.endpoint.rstrip("/") + "/chat/completions", body, self.api_key, s.timeout_s, s.max_retries)
        try:
            return str(data["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"correctness judge endpoint returned no message: {json.dumps(data)[:200]}") from e


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


SCORERS = {"reward": RewardScorer, "loss": LossScorer, "length": LengthScorer, "injection": InjectionScorer,
           "judge": JudgeScorer, "confidence": ConfidenceScorer, "correctness": CorrectnessScorer}
