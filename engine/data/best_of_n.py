"""Best-of-N generation output to SFT records (docs/science.md §5, CAR Table 3).

A generate job samples N responses per instruction and a score job attaches one reward per
response; this picks the response each variant trains on. Ties go to the first index
(`engine.metrics.select_best_of_n`), as in the Magpie pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from engine.metrics import select_best_of_n, select_worst_of_n

Selection = Literal["best", "worst", "sampling"]


def bon_to_sft(
    records: Iterable[Mapping[str, Any]],
    mode: Selection = "best",
    responses_key: str = "responses",
    rewards_key: str = "rewards",
) -> list[dict[str, Any]]:
    """One SFT record per instruction, keeping the response that `mode` selects.

    - `best`: argmax reward (Best-of-N); `worst`: argmin (Worst-of-N);
    - `sampling`: the first sample, no selection [INFERRED in §5], rewards not needed.

    Input records carry `instruction`, optionally `input`, the N `responses` and (except for
    `sampling`) one reward per response. Output records are Alpaca-style (`instruction`, `input`,
    `output`) plus provenance: `selected_index`, `reward` (None without rewards) and `n`, so that
    which RM and N were used can be traced back (both are UNPINNED in §5).
    """
    sft = []
    for i, record in enumerate(records):
        responses = list(record[responses_key])
        if not responses:
            raise ValueError(f"record {i} has no responses")
        rewards = record.get(rewards_key)
        if rewards is not None and len(rewards) != len(responses):
            raise ValueError(f"record {i}: {len(responses)} responses but {len(rewards)} rewards")
        if mode == "sampling":
            index = 0
        elif rewards is None:
            raise ValueError(f"record {i} has no {rewards_key!r}; mode {mode!r} needs them")
        elif mode == "best":
            index = select_best_of_n(rewards)
        elif mode == "worst":
            index = select_worst_of_n(rewards)
        else:
            raise ValueError(f"mode must be 'best', 'worst' or 'sampling', got {mode!r}")
        sft.append(
            {
                "instruction": record["instruction"],
                "input": record.get("input", ""),
                "output": responses[index],
                "selected_index": index,
                "reward": None if rewards is None else float(rewards[index]),
                "n": len(responses),
            }
        )
    return sft
