"""MT-Bench single-answer grading score (docs/science.md §7.4).

Hand-written after FastChat's `gen_judgment`/`show_result`: a rating is read from `[[r]]` (with
`[r]` as FastChat's fallback), a failed parse is -1, and -1 ratings are excluded from the mean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")
INVALID_RATING = -1.0


def parse_mt_bench_rating(judgment: str) -> float:
    """The 1-10 rating in a GPT-4 judgment, or -1 when none can be read."""
    match = _RATING.search(judgment) or _RATING_FALLBACK.search(judgment)
    return float(match.group(1)) if match else INVALID_RATING


def mt_bench_score(ratings: Iterable[float | None]) -> float:
    """Mean of all valid turn ratings (80 questions × 2 turns), e.g. [8, 7, 9, 6] -> 7.5.

    None and -1 (unparsed) are left out. Pass one turn's ratings to get the turn-1 or turn-2 mean.
    """
    valid = [float(r) for r in ratings if r is not None and r != INVALID_RATING]
    return sum(valid) / len(valid) if valid else float("nan")
