"""Response log-likelihood under a causal LM: loss, perplexity and IFD (docs/science.md §0, §1).

Convention: prefix masking exactly as §0 (s = token count of P alone), right padding, natural log.
"""

from __future__ import annotations

import math
from typing import Any

from engine.jobs._batching import pad
from engine.jobs._loading import load_causal_lm, load_tokenizer, model_record, require_chat_template
from engine.jobs._prompts import render
from engine.jobs.scorers.base import NAN, Item, Scorer, _finite


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
