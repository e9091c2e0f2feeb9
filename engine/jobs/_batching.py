"""Length-sorted batching with padding statistics, shared by generation and scoring.

Why: padding is wasted compute. Sorting by length (longest first, as lm-eval-harness does, so an
OOM shows in the first batch and the ETA is pessimistic) and capping each batch by a token budget
(rows x longest row) rather than a row count keeps the padding fraction small on prompts of very
different lengths (docs/science.md §14). Callers restore dataset order from the indices.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field


def sorted_batches(lengths: Sequence[int], max_rows: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches, longest first; ties keep dataset order.

    A batch closes when it has `max_rows` rows or when one more row would make
    rows x longest-row exceed `max_tokens`. A row longer than the budget on its own gets a batch
    of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        n = max(1, lengths[i])
        new_max = max(cur_max, n)
        if cur and (len(cur) >= max_rows or (max_tokens is not None and new_max * (len(cur) + 1) > max_tokens)):
            batches.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def unsorted_batches(n: int, max_rows: int) -> list[list[int]]:
    """Dataset-order batches of `max_rows` (the naive baseline the benchmarks compare against)."""
    return [list(range(i, min(n, i + max_rows))) for i in range(0, n, max_rows)]


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "left"):  # noqa: ANN201 - tensors
    """(input_ids, attention_mask, position_ids) for a batch of token-id lists.

    Position ids count real tokens only (0 at each row's first real token), so a left-padded row
    sees exactly the positions it would see alone; models that derive positions from the
    attention mask agree, and those that would not are given them explicitly.
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        if not s:
            continue
        if side == "left":
            ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s):] = 1
        else:
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


@dataclass
class Throughput:
    """Real (non-pad) tokens, padded tokens and wall time, for tokens/s and the padding fraction."""

    real_tokens: int = 0
    padded_tokens: int = 0
    seconds: float = 0.0
    batches: int = 0
    _t0: float | None = field(default=None, repr=False)

    def add_batch(self, seqs: Sequence[Sequence[int]]) -> None:
        self.real_tokens += sum(len(s) for s in seqs)
        self.padded_tokens += len(seqs) * max((len(s) for s in seqs), default=0)
        self.batches += 1

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0
