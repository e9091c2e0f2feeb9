"""Every shipped recipe's `tiny` variant, end to end under a real worker, as a user runs it:
`labdeck submit RECIPE --variant tiny`, then the numbers each stage should have recorded, then the
view the recipe's header points at (`labdeck results ...` / `labdeck correlate ...`).

Tiny random-init models make the numbers meaningless; what is checked is that every stage of the
paper-scale pipeline ran, reported its metrics as finite numbers, and that the final view renders.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from db.queries import JobDetail, job_detail

pytestmark = pytest.mark.timeout(1200)


def details(run, stage: str) -> dict[str, JobDetail]:
    """What `labdeck show JOB` shows (spec, latest metrics, artifacts) for every job of one stage."""
    jobs = run.stage(stage)
    assert jobs, f"no job of stage {stage!r}"
    with run.store.read() as s:
        return {j.name: job_detail(s, j.id) for j in jobs}


def stage_metrics(run, stage: str, names: Iterable[str]) -> dict[str, dict[str, float]]:
    """{job name: {metric: latest value}} for one stage; every job must have reported every metric, finite
    (a job reports NaN as an info line, not a metric, so a missing metric is also a NaN one)."""
    out: dict[str, dict[str, float]] = {}
    for name, d in details(run, stage).items():
        for m in names:
            v = d.metrics.get(m)
            assert v is not None and math.isfinite(v), f"{name}: no finite {m!r} (has {sorted(d.metrics)})"
        out[name] = {m: d.metrics[m] for m in names}
    return out


def artifacts(run, stage: str, kind: str) -> dict[str, list]:
    return {name: [a for a in d.artifacts if a.kind == kind] for name, d in details(run, stage).items()}


def pivot(run, experiment: str, *args: str) -> dict:
    """`labdeck results EXPERIMENT ... --format json`, after checking the table itself renders (exit 0)."""
    table = run.cli("results", experiment, *args)
    assert table.returncode == 0, table.stderr
    assert f"{experiment}: " in table.stdout, table.stdout
    r = run.cli("results", experiment, *args, "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["missing"] == 0 and data["cells"], data
    assert all(math.isfinite(c["mean"]) for c in data["cells"]), data
    return data


def counts(run) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in run.jobs:
        out[j.params["stage"]] = out.get(j.params["stage"], 0) + 1
    return out


def test_expo_tiny_sweeps_alpha_and_judges_each_merge(run_variant) -> None:
    t0 = time.monotonic()
    run = run_variant("expo")
    print(f"expo --variant tiny: {len(run.jobs)} jobs in {time.monotonic() - t0:.1f} s")
    exp = "expo-tiny"
    assert counts(run) == {"build": 1, "merge": 2, "answer": 2, "judge": 2}
    built = artifacts(run, "build", "model")["build"]
    assert {a.meta["name"] for a in built} == {"sft", "aligned", "judge"}
    merged = artifacts(run, "merge", "model")
    assert sorted(arts[0].meta["alpha"] for arts in merged.values()) == [0.0, 0.5]
    stage_metrics(run, "answer", ["records", "mean_response_tokens"])
    judged = stage_metrics(run, "judge", ["win_rate", "discrete_win_rate", "length_chars"])
    assert all(0 <= m["win_rate"] <= 100 for m in judged.values())
    data = pivot(run, exp, "--rows", "alpha", "--metric", "win_rate", "--where", "stage=judge")
    assert data["row_labels"] == ["0", "0.5"]


def test_car_teacher_selection_tiny_scores_trains_judges_and_correlates(run_variant) -> None:
    t0 = time.monotonic()
    run = run_variant("car_teacher_selection")
    print(f"car_teacher_selection --variant tiny: {len(run.jobs)} jobs in {time.monotonic() - t0:.1f} s")
    exp = "car-teacher-selection-tiny"
    assert counts(run) == {"build": 1, "generate": 2, "quality": 2, "compat": 2, "sft": 2, "answer": 2, "judge": 2,
                           "answer_ah": 2, "arena_hard": 2, "ap": 2}
    built = artifacts(run, "build", "model")["build"]
    assert {a.meta["name"] for a in built} == {"teacher-a", "teacher-b", "student-qwen", "gpt2", "judge", "rm1", "rm2", "rm3"}
    stage_metrics(run, "generate", ["records", "mean_response_tokens"])
    # once per teacher: the three rewards, IFD/PPL under the GPT-2 stand-in, length (§1, §2, §5)
    stage_metrics(run, "quality", ["reward_rm1", "reward_rm2", "reward_rm3", "gpt2", "gpt2_ifd", "length_tokens"])
    # per pair: loss and IFD under the student (-Self), CAR (§3), the teacher's metrics carried over
    compat = stage_metrics(run, "compat", ["reward_rm1", "reward_rm3", "gpt2_ifd", "length_tokens", "loss", "loss_ifd",
                                           "loss_ppl", "car"])
    for m in compat.values():
        assert m["car"] == pytest.approx(m["reward_rm3"] / (1 + 1.0 * m["loss"]), rel=1e-6)
    stage_metrics(run, "sft", ["final_loss", "train_seconds"])
    assert all(arts for arts in artifacts(run, "sft", "model").values())
    stage_metrics(run, "answer", ["records"])
    judged = stage_metrics(run, "judge", ["win_rate", "lc_win_rate", "length_chars"])
    assert all(0 <= m["win_rate"] <= 100 for m in judged.values())
    ah = stage_metrics(run, "arena_hard", ["arena_hard_win_rate"])
    ap = stage_metrics(run, "ap", ["average_performance", "ae2_lc_win_rate", "arena_hard_win_rate"])
    assert sorted(m["average_performance"] for m in ap.values()) == pytest.approx(sorted(
        (j["lc_win_rate"] + a["arena_hard_win_rate"]) / 2 for j, a in zip(judged.values(), ah.values(), strict=True)))

    # the view the recipe's header names: Spearman's rho of CAR against AP, per student
    args = ("correlate", exp, "car", "average_performance", "--match", "teacher", "--by", "student",
            "--x-where", "stage=compat", "--y-where", "stage=ap")
    r = run.cli(*args)
    assert r.returncode == 0 and "Spearman rho of car against average_performance" in r.stdout, r.stdout + r.stderr
    r = run.cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    groups = json.loads(r.stdout)["groups"]
    assert [(g["group"], g["n"]) for g in groups] == [("student-qwen", 2)]
    data = pivot(run, exp, "--rows", "student", "--cols", "teacher", "--metric", "win_rate", "--where", "stage=judge")
    assert data["col_labels"] == ["teacher-a", "teacher-b"] and len(data["cells"]) == 2
    pivot(run, exp, "--rows", "student", "--cols", "teacher", "--metric", "car", "--where", "stage=compat")


def test_prompt_injection_tiny_attacks_each_defense_and_reports_asr_and_utility(run_variant) -> None:
    t0 = time.monotonic()
    run = run_variant("prompt_injection")
    print(f"prompt_injection --variant tiny: {len(run.jobs)} jobs in {time.monotonic() - t0:.1f} s")
    exp = "prompt-injection-tiny"
    assert counts(run) == {"build": 1, "undefended": 1, "struq": 1, "secalign": 1, "attacked": 3, "asr": 3,
                           "utility": 3, "judge": 3}
    # the undefended model is trained on plain Cleaned Alpaca records (no StruQ injection mix),
    # in the StruQ format; SecAlign is DPO from the undefended model
    (undefended,) = run.stage("undefended")
    shown = run.cli("show", str(undefended.id), "--json")
    assert shown.returncode == 0, shown.stderr
    spec = json.loads(shown.stdout)["spec"]
    assert (spec["transform"], spec["template"], spec["method"]) == ("none", "struq", "sft")
    specs = {stage: next(iter(details(run, stage).values())).spec for stage in ("struq", "secalign")}
    assert (specs["struq"]["transform"], specs["secalign"]["transform"], specs["secalign"]["method"]) == ("struq", "secalign", "dpo")
    assert specs["secalign"]["model"]["path"] == f"${{job:{undefended.id}.output}}"  # a path only in the run folder
    for stage in ("undefended", "struq", "secalign"):
        stage_metrics(run, stage, ["final_loss"])

    eval_file = Path(__file__).parents[2] / "engine" / "data" / "demo_eval.jsonl"
    with_input = sum(1 for line in eval_file.read_text().splitlines() if json.loads(line).get("input"))
    attacked = details(run, "attacked")
    for name, m in stage_metrics(run, "attacked", ["records"]).items():
        assert m["records"] == 2 * with_input, name  # only samples with an input are attacked, by both attacks
        assert attacked[name].spec["defense_filter"] is ("defense=none" not in name), name  # front-end for defended models

    per_attack = ["asr_ignore", "asr_completion_realcmb"]
    asr = stage_metrics(run, "asr", ["asr", "asr_in_response", *per_attack, "max_asr_opt_free"])
    assert {n.split("defense=")[1].rstrip("]") for n in asr} == {"none", "struq", "secalign"}
    for m in asr.values():
        assert all(0 <= m[a] <= 100 for a in per_attack)
        assert m["max_asr_opt_free"] == max(m[a] for a in per_attack)
    for name, m in stage_metrics(run, "utility", ["records"]).items():
        assert m["records"] == 8, name
    judged = stage_metrics(run, "judge", ["win_rate", "length_chars"])
    assert all(0 <= m["win_rate"] <= 100 for m in judged.values())

    data = pivot(run, exp, "--rows", "base", "--cols", "defense", "--metric", "max_asr_opt_free", "--where", "stage=asr")
    assert data["row_labels"] == ["tiny-llama"] and sorted(data["col_labels"]) == ["none", "secalign", "struq"]
    pivot(run, exp, "--rows", "defense", "--metric", "asr_ignore", "--where", "stage=asr")
    data = pivot(run, exp, "--rows", "base", "--cols", "defense", "--metric", "win_rate", "--where", "stage=judge")
    assert len(data["cells"]) == 3
