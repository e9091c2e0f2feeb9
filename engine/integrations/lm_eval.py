"""lm-evaluation-harness results as labdeck metrics, named so they pivot like labdeck's own families.

lm-eval writes `results_<timestamp>.json` under `--output_path` with, per task,
`{"acc,none": 0.71, "acc_stderr,none": 0.01, "alias": "arc_easy", ...}` (metric, comma, filter).
Each number becomes the metric `METRIC/TASK` (`acc/arc_easy`, `acc_norm/hellaswag`,
`exact_match_strict-match/gsm8k` when the filter is not `none`), the same `NAME/GROUP` shape as the
per-subject families of labdeck's score jobs, so `labdeck results EXP --rows group --cols model
--metric 'acc/*'` puts tasks in rows. Group scores (`groups`, e.g. mmlu) come out the same way.

Standard library only: the parser runs in the job (through `python -m engine.integrations.lm_eval`)
and in tests, never needing lm-eval itself.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _metric_name(key: str, task: str) -> str | None:
    metric, comma, filt = key.partition(",")
    if not comma or not metric:  # "alias", "name", "sample_len": not metric values
        return None
    if filt and filt != "none":
        metric = f"{metric}_{filt}"
    return f"{metric}/{task}"


def lm_eval_metrics(results: dict[str, Any] | str | Path) -> dict[str, float]:
    """{`METRIC/TASK`: value} from an lm-eval results dict or file; stderr values as `METRIC_stderr/TASK`.

    Non-numbers ("N/A" stderr of a single-sample task, aliases) are left out. A file that is not an
    lm-eval results file raises ValueError naming it.
    """
    where = "results"
    if isinstance(results, (str, Path)):
        where = str(results)
        try:
            results = json.loads(Path(results).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: not a readable JSON file ({e})") from None
    if not isinstance(results, dict) or not isinstance(results.get("results"), dict):
        raise ValueError(f"{where}: no 'results' object; is this lm-eval's results_*.json?")
    out: dict[str, float] = {}
    for section in ("results", "groups"):
        for task, values in (results.get(section) or {}).items():
            if not isinstance(values, dict):
                continue
            for key, v in values.items():
                name = _metric_name(key, str(task))
                if name is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                out[name] = float(v)
    return out


def newest_results(folder: str | Path) -> Path:
    """The newest `results_*.json` under `folder` (lm-eval nests it in a folder named after the model)."""
    found = sorted(Path(folder).rglob("results_*.json"), key=lambda p: (p.stat().st_mtime, p.name))
    if not found:
        raise ValueError(f"{folder}: no lm-eval results_*.json in it")
    return found[-1]


def report_lm_eval(path: str | Path, reporter: Any = None) -> dict[str, float]:
    """Report an lm-eval results file (or the newest one in a folder) as the job's summary metrics."""
    from engine.events import Reporter

    p = Path(path)
    if p.is_dir():
        p = newest_results(p)
    metrics = lm_eval_metrics(p)
    own = reporter is None
    rep = reporter or Reporter()
    try:
        rep.metrics(metrics)
        rep.artifact("lm_eval_results", p.resolve(), tasks=sorted({k.split("/", 1)[1] for k in metrics}))
    finally:
        if own:
            rep.close()
    return metrics


def _output_path(cmd: list[str]) -> str | None:
    """lm-eval's --output_path; a relative one is made absolute under the job's run folder (in place),
    so a job whose `cwd` is elsewhere (a tasks folder) still writes its results with its other outputs."""
    import os

    for k, a in enumerate(cmd):
        if a in ("--output_path", "-o") and k + 1 < len(cmd):
            idx, value, prefix = k + 1, cmd[k + 1], ""
        elif a.startswith("--output_path="):
            idx, value, prefix = k, a.split("=", 1)[1], "--output_path="
        else:
            continue
        run_dir = os.environ.get("LABDECK_RUN_DIR")
        if run_dir and not os.path.isabs(value):
            value = os.path.join(run_dir, value)
            cmd[idx] = prefix + value
        return value
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m engine.integrations.lm_eval RESULTS_JSON_OR_FOLDER`: report lm-eval results to this labdeck job;
    `python -m engine.integrations.lm_eval -- lm_eval ... --output_path DIR`: run lm-eval, then report what it wrote.
    """
    import shutil
    import subprocess

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        cmd = args[1:]
        out = _output_path(cmd)
        if not cmd or out is None:
            print("lm_eval: give the lm_eval command after --, with --output_path DIR", file=sys.stderr)
            return 2
        if cmd[0] == "lm_eval" and shutil.which("lm_eval") is None:  # installed beside us, its script not on PATH
            cmd = [sys.executable, "-m", "lm_eval", *cmd[1:]]
        rc = subprocess.call(cmd)  # noqa: S603 - the user's own argument list, no shell
        if rc != 0:
            return rc
        args = [out]
    if len(args) != 1:
        print("usage: python -m engine.integrations.lm_eval RESULTS_JSON_OR_FOLDER | -- lm_eval ARGS...", file=sys.stderr)
        return 2
    try:
        metrics = report_lm_eval(args[0])
    except (ValueError, RuntimeError) as e:
        print(f"lm_eval: {e}", file=sys.stderr)
        return 2
    print(f"reported {len(metrics)} metrics from {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
