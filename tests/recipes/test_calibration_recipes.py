"""The calibration recipes (seeds 003 and 004) end to end on tiny local models, under a real worker."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from db.queries import experiment_metric

pytestmark = pytest.mark.timeout(1200)  # whole pipelines of real jobs

SUBJECTS = {"high_school_us_history", "machine_learning", "nutrition", "virology"}


def _metrics(run, job) -> dict[str, float]:  # noqa: ANN001
    events = (run.home / "runs" / str(job.id) / "events.jsonl").read_text().splitlines()
    return {e["name"]: e["value"] for e in map(json.loads, events) if e["type"] == "metric" and "step" not in e}


def _check_common(run) -> None:  # noqa: ANN001
    for job in run.stage("answer_pool") + run.stage("answer_mmlu"):
        assert _metrics(run, job)["records"] > 0
    for job in run.stage("label_pool") + run.stage("label_mmlu"):
        assert 0.0 < _metrics(run, job)["correct"] < 1.0, "tiny models answer some questions right and some wrong"
    for job in run.stage("train"):
        m = _metrics(run, job)
        assert math.isfinite(m["val_auroc"]) and m["temperature"] > 0, job.name


def test_calibration_tiny(run_variant) -> None:  # noqa: ANN001
    run = run_variant("calibration")
    assert Counter(j.params["stage"] for j in run.jobs) == {
        "build": 1, "answer_pool": 1, "label_pool": 1, "answer_mmlu": 1, "label_mmlu": 1, "train": 3,
        "zero_shot": 1, "evaluate": 3}
    _check_common(run)
    for job in run.stage("zero_shot") + run.stage("evaluate"):
        m = _metrics(run, job)
        for s in SUBJECTS:
            assert f"auroc/{s}" in m and math.isfinite(m[f"ece/{s}"]), (job.name, s)
        assert math.isfinite(m["auroc_group_mean"])
    # the seed-003 heatmap: subjects x (model, method), every cell filled (one model in the tiny variant)
    with run.store.read() as s:
        rows = experiment_metric(s, "calibration-tiny", "auroc/*")
    assert {r.params["method"] for r in rows if r.value is not None} == {"zero_shot", "probe", "lora", "lora_prompt"}
    r = run.cli("results", "calibration-tiny", "--metric", "auroc/*", "--rows", "group", "--cols", "model,method",
                "--format", "json")
    assert r.returncode == 0, r.stderr
    pivot = json.loads(r.stdout)
    assert set(pivot["row_labels"]) == SUBJECTS
    assert pivot["col_labels"] == ["llama · lora", "llama · lora_prompt", "llama · probe", "llama · zero_shot"]
    assert len(pivot["cells"]) == 4 * 4
    r = run.cli("results", "calibration-tiny", "--metric", "ece/*", "--rows", "group", "--cols", "method",
                "--where", "model=llama")
    assert r.returncode == 0 and "machine_learning" in r.stdout and "zero_shot" in r.stdout


def test_cross_model_transfer_tiny(run_variant) -> None:  # noqa: ANN001
    run = run_variant("cross_model_transfer")
    assert Counter(j.params["stage"] for j in run.jobs) == {
        "build": 1, "answer_pool": 2, "label_pool": 2, "answer_mmlu": 1, "label_mmlu": 1, "train": 8, "evaluate": 8}
    _check_common(run)
    for job in run.stage("evaluate"):
        assert {"estimator", "trained_on", "evaluated_on", "method"} <= set(job.params)
        assert math.isfinite(_metrics(run, job)["auroc_group_mean"])
    r = run.cli("results", "cross-model-transfer-tiny", "--rows", "estimator", "--cols", "trained_on", "--metric",
                "auroc_group_mean", "--where", "method=probe", "--format", "json")
    assert r.returncode == 0, r.stderr
    pivot = json.loads(r.stdout)
    assert pivot["row_labels"] == ["llama", "qwen"] and pivot["col_labels"] == ["llama", "qwen"]
    assert len(pivot["cells"]) == 4 and all(c["n"] == 1 for c in pivot["cells"])
