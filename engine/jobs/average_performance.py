"""AP, the outcome CAR predicts (docs/science.md §4.1): mean(AlpacaEval 2 LC, Arena-Hard WR) of one fine-tuned model.

`python -m engine.jobs.average_performance AE2_SUMMARY AH_SUMMARY [OUT_DIR]` reads the two score jobs'
`outputs/summary.json` (the AE2 judge's `lc_win_rate`, the Arena-Hard judge's `arena_hard_win_rate`) and
reports `average_performance` with both parts and the raw AE2 WR (not part of AP: the CAR paper's AP column
equals (LC + AH)/2 on every row). Run as a recipe's `command` stage, so the metric sits on one job per
(teacher, student) pair and `labdeck correlate` can rank every selection metric against it. Bad input: one
line naming the file and field, exit 2.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path


def _metric(path: Path, name: str) -> float:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: cannot read a score summary ({e.__class__.__name__})") from e
    value = (data.get("metrics") or {}).get(name)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SystemExit(f"{path}: metrics.{name} is missing or not a finite number")
    return float(value)


def _baseline(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    return (data.get("recorded") or {}).get("baselines") or {}


def compute(ae2_summary: Path, ah_summary: Path) -> dict[str, object]:
    from engine.metrics import average_performance

    lc = _metric(ae2_summary, "lc_win_rate")
    ah = _metric(ah_summary, "arena_hard_win_rate")
    return {"metrics": {"average_performance": float(average_performance(lc, ah)), "ae2_lc_win_rate": lc,
                        "ae2_win_rate": _metric(ae2_summary, "win_rate"), "arena_hard_win_rate": ah},
            "definition": "AP = (AlpacaEval 2 LC + Arena-Hard WR) / 2 (CAR Table 4; raw AE2 WR excluded)",
            "sources": {"ae2": str(ae2_summary), "arena_hard": str(ah_summary)},
            "baselines": {"ae2": _baseline(ae2_summary), "arena_hard": _baseline(ah_summary)}}


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from engine.events import ENV_EVENTS, Reporter

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        print("usage: python -m engine.jobs.average_performance AE2_SUMMARY AH_SUMMARY [OUT_DIR]", file=sys.stderr)
        return 2
    try:
        result = compute(Path(args[0]), Path(args[1]))
    except SystemExit as e:
        print(f"average_performance: {e}", file=sys.stderr)
        return 2
    out = Path(args[2]) if len(args) == 3 else Path("outputs")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    if os.environ.get(ENV_EVENTS):
        events = Reporter()
        events.metrics(result["metrics"])  # type: ignore[arg-type]
        events.close()
    print(json.dumps(result["metrics"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
