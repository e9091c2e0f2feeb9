"""Arena-Hard v0.1 win rate against a single baseline (docs/science.md §7.3).

Hand-written: arena-hard-auto is a script around a pandas/Bradley-Terry fit, not a library. With
one baseline the BT fit and the plain mean score give essentially the same WR (§7.3, §12 item 7);
this module computes the mean score, with the repo's verdict parsing and battle weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

VERDICT_PATTERN = re.compile(r"\[\[([AB<>=]+)\]\]")
DECISIVE_WEIGHT = 3  # a "≫" verdict counts as three battles

# Score of the *model* for each verdict. Game 0 shows A = baseline, B = model; game 1 swaps them.
_GAME0 = {
    "A>>B": (0.0, DECISIVE_WEIGHT),
    "A>B": (0.0, 1),
    "A=B": (0.5, 1),
    "B>A": (1.0, 1),
    "B>>A": (1.0, DECISIVE_WEIGHT),
}
_GAME1 = {
    "A>>B": (1.0, DECISIVE_WEIGHT),
    "A>B": (1.0, 1),
    "A=B": (0.5, 1),
    "B>A": (0.0, 1),
    "B>>A": (0.0, DECISIVE_WEIGHT),
}


def parse_arena_hard_verdict(judgment: str | None) -> str | None:
    """The verdict in `[[...]]` of a judge's text, or None when absent or contradictory.

    As in arena-hard-auto's `get_score`: every match of `\\[\\[([AB<>=]+)\\]\\]` is collected and
    the judgment counts only when they all agree.
    """
    if judgment is None:
        return None
    found = {m for m in VERDICT_PATTERN.findall(judgment) if m}
    return found.pop() if len(found) == 1 else None


def arena_hard_scores(verdict_pairs: Iterable[tuple[str | None, str | None]]) -> list[float]:
    """Expand (game 0, game 1) judgments into per-battle model scores: 1 win, 0.5 tie, 0 loss.

    A decisive verdict becomes three battles. An unparsable or unknown verdict (e.g. "A<B")
    gives weight 0 and is dropped, as in arena-hard-auto's battle construction.
    """
    scores: list[float] = []
    for game0, game1 in verdict_pairs:
        for judgment, table in ((game0, _GAME0), (game1, _GAME1)):
            verdict = parse_arena_hard_verdict(judgment)
            if verdict in table:
                score, weight = table[verdict]
                scores.extend([score] * weight)
    return scores


def arena_hard_win_rate(verdict_pairs: Iterable[tuple[str | None, str | None]]) -> float:
    """Mean model score over all battles × 100 (§7.3); NaN when no judgment parsed.

    Each pair holds the two judge outputs for one prompt (game 0 with the baseline as A, game 1
    with the model as A). E.g. ("[[B>A]]", "[[A>>B]]") and ("[[A=B]]", "[[B>A]]") give 75%.
    """
    scores = arena_hard_scores(verdict_pairs)
    return sum(scores) / len(scores) * 100 if scores else float("nan")
