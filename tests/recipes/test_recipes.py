"""Shipped recipes: every file expands into valid jobs with the dependencies its stages declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.specfile import expand_file

RECIPES = sorted((Path(__file__).parents[2] / "engine" / "recipes").glob("*.yaml"))


def test_recipes_are_shipped() -> None:
    assert {p.stem for p in RECIPES} >= {"demo_car", "car_teacher_selection", "prompt_injection", "expo", "calibration",
                                        "cross_model_transfer"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_expands_and_validates(path: Path) -> None:
    exp = expand_file(path)
    assert exp.drafts, path
    names = [d.name for d in exp.drafts]
    assert len(names) == len(set(names)), "every job of a recipe has a distinct name"
    for i, d in enumerate(exp.drafts):
        assert all(j < i for j in d.depends_on), "stages depend only on earlier jobs"
        assert "${" not in str({k: v for k, v in d.spec.items()}).replace("${@", ""), d.name
        assert d.spec.get("model", {}).get("trust_remote_code", False) is False


def test_car_recipe_shape() -> None:
    exp = expand_file(next(p for p in RECIPES if p.stem == "car_teacher_selection"))
    by_stage: dict[str, list] = {}
    for d in exp.drafts:
        by_stage.setdefault(d.params["stage"], []).append(d)
    teachers, students = 6, 5
    assert len(by_stage["generate"]) == teachers
    for stage in ("compat", "sft", "answer", "judge"):
        assert len(by_stage[stage]) == teachers * students
    sft = by_stage["sft"][0].spec
    # table 5 on one GPU: lr 2e-5, 2 epochs, effective batch 32, cosine, warmup 100, 4096 tokens
    assert (sft["learning_rate"], sft["epochs"], sft["lr_scheduler"], sft["warmup_steps"], sft["max_seq_len"]) == (2e-5, 2, "cosine", 100, 4096)
    assert sft["per_device_batch"] * sft["grad_accum"] == 32


def test_expo_recipe_alphas() -> None:
    exp = expand_file(next(p for p in RECIPES if p.stem == "expo"))
    merges = [d for d in exp.drafts if d.kind == "merge"]
    assert [d.spec["alpha"] for d in merges] == [0.0, 0.1, 0.2, 0.3, 0.5]
    assert all(d.spec["aligned"]["path"] == "UCLA-AGI/Mistral7B-PairRM-SPPO" for d in merges)


def _stages(path_stem: str, variant: str | None = None) -> dict[str, list]:
    exp = expand_file(next(p for p in RECIPES if p.stem == path_stem), variant=variant)
    by_stage: dict[str, list] = {}
    for d in exp.drafts:
        by_stage.setdefault(d.params["stage"], []).append(d)
    return by_stage


def test_calibration_recipe_shape() -> None:
    by_stage = _stages("calibration")
    models, methods = 6, 3
    for stage in ("answer_pool", "label_pool", "answer_mmlu", "label_mmlu", "zero_shot"):
        assert len(by_stage[stage]) == models, stage
    assert len(by_stage["train"]) == len(by_stage["evaluate"]) == models * methods
    assert {d.params["method"] for d in by_stage["zero_shot"]} == {"zero_shot"}
    assert {d.params["model"] for d in by_stage["zero_shot"]} == {
        "llama-2-7b", "llama-2-7b-chat", "llama-2-13b", "llama-2-13b-chat", "mistral-7b", "mistral-7b-instruct"}
    gen = by_stage["answer_pool"][0].spec
    assert (gen["template"], gen["max_new_tokens"], gen["temperature"], gen["sanitize"]) == ("raw", 30, 0.0, True)
    judge = by_stage["label_mmlu"][0].spec["scorers"][0]
    assert (judge["mode"], judge["endpoint_model"]) == ("judge", "gpt-3.5-turbo-1106")
    styles = {d.params["method"]: d.spec for d in by_stage["train"]}
    assert styles["probe"]["lora"] is None and styles["lora"]["lora"]["r"] == 8
    lp = styles["lora_prompt"]
    # §10.3: lr 1e-4 cosine, no warmup, batch 4, 5000 steps, seed 137, LoRA r 8 / alpha 32 / dropout 0.1, kappa 1
    assert (lp["learning_rate"], lp["lr_scheduler"], lp["per_device_batch"], lp["max_steps"], lp["seed"]) == (
        1e-4, "cosine", 4, 5000, 137)
    assert (lp["lora"]["alpha"], lp["lora"]["dropout"], lp["jsd_weight"], lp["temperature_scaling"]) == (32, 0.1, 1.0, True)
    ev = by_stage["evaluate"][0]
    assert ev.spec["group_field"] == "subject" and ev.spec["scorers"][0]["estimator"].startswith("${@")
    assert len(ev.depends_on) == 2  # its model's labelled MMLU answers and its trained estimator


def test_cross_model_transfer_recipe_shape() -> None:
    by_stage = _stages("cross_model_transfer")
    assert len(by_stage["answer_pool"]) == len(by_stage["answer_mmlu"]) == 2
    assert len(by_stage["train"]) == 2 * 2 * 2  # estimator x trained_on x method
    assert len(by_stage["evaluate"]) == 2 * 2 * 2 * 2  # ... x evaluated_on
    drafts = expand_file(next(p for p in RECIPES if p.stem == "cross_model_transfer")).drafts
    off = next(d for d in by_stage["train"] if d.params["estimator"] == "llama-2-7b" and d.params["trained_on"] == "mistral-7b")
    assert off.spec["model"]["path"] == "meta-llama/Llama-2-7b-hf"  # a LLaMA-2 estimator ...
    (dep,) = off.depends_on
    assert drafts[dep].params == {"stage": "label_pool", "trained_on": "mistral-7b"}  # ... of Mistral's labelled answers
    assert {d.params["method"] for d in by_stage["evaluate"]} == {"probe", "lora_prompt"}


def test_tiny_variants_use_shipped_data_and_local_models() -> None:
    for stem in ("calibration", "cross_model_transfer"):
        by_stage = _stages(stem, "tiny")
        assert by_stage["build"][0].spec["kind"] == "command"
        for d in by_stage["answer_pool"]:
            assert d.spec["dataset"]["path"].endswith("engine/data/calibration/tiny_pool.jsonl")
            assert d.spec["model"]["path"].startswith("${@")
        assert all(d.spec["gpus"] == 0 for ds in by_stage.values() for d in ds)
    assert len(expand_file(next(p for p in RECIPES if p.stem == "calibration"), variant="tiny").drafts) == 12
    assert len(expand_file(next(p for p in RECIPES if p.stem == "cross_model_transfer"), variant="tiny").drafts) == 23
