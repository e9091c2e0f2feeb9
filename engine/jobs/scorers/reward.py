"""The reward model (score job's `reward` scorer, the RM judge and best-of-N generation), §2.

Convention pinned here, a place where batched scoring silently goes wrong: the RM's own chat
template, left padding, and the score read at the last position of every row (HF's "rightmost
non-pad token" search is disabled, so a response that ends with the pad/eos id is still scored at
its last token, as a batch of one is). Scores are batch-size invariant within float tolerance
(tested). docs/science.md §2, §14 (allenai/reward-bench#137).
"""

from __future__ import annotations

from typing import Any

from engine.jobs._batching import Throughput, pad, sorted_batches
from engine.jobs._loading import load_reward_model, load_tokenizer, model_record, require_chat_template
from engine.jobs._prompts import apply_chat
from engine.jobs.scorers.base import NAN, Item, Scorer, _finite


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
