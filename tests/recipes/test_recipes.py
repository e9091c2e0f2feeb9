"""Shipped recipes: every file expands into valid jobs with the dependencies its stages declare."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.specfile import expand_file

RECIPES = sorted((Path(__file__).parents[2] / "engine" / "recipes").glob("*.yaml"))


def test_recipes_are_shipped() -> None:
    assert {p.stem for p in RECIPES} >= {"demo_car", "car_teacher_selection", "prompt_injection", "expo"}


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


def _model_paths(value) -> list[str]:  # noqa: ANN001
    if isinstance(value, dict):
        own = [value["path"]] if "path" in value and ("trust_remote_code" in value) else []
        return own + [p for v in value.values() for p in _model_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _model_paths(v)]
    return []


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem != "demo_car"], ids=lambda p: p.stem)
def test_every_recipe_has_a_tiny_variant_of_its_whole_pipeline(path: Path) -> None:
    """Issue 7: the test suite runs each recipe scaled down (tests/recipes/test_recipe_variants.py);
    the variant keeps every stage, runs on the CPU, and loads only local models built by the run itself."""
    full, tiny = expand_file(path), expand_file(path, variant="tiny")
    full_stages = {d.params["stage"] for d in full.drafts}
    assert full_stages <= {d.params["stage"] for d in tiny.drafts}
    assert len(tiny.drafts) < len(full.drafts)
    assert {d.gpus_requested for d in tiny.drafts} == {0}
    assert tiny.drafts[0].experiment != full.drafts[0].experiment  # never mixed into the real results
    for d in tiny.drafts:
        for model in _model_paths(d.spec):
            assert model.startswith("${@"), f"{d.name}: {model} is not built by the run"
        assert all(sc.get("endpoint") is None for sc in d.spec.get("scorers", [])), f"{d.name}: judges over HTTP"


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


def test_car_recipe_scores_ifd_under_gpt2_by_default() -> None:
    exp = expand_file(next(p for p in RECIPES if p.stem == "car_teacher_selection"))
    compat = next(d for d in exp.drafts if d.params["stage"] == "compat").spec
    gpt2 = next(s for s in compat["scorers"] if s.get("prefix") == "gpt2")
    assert (gpt2["model"]["path"], gpt2["template"], gpt2["ifd"]) == ("openai-community/gpt2", "superfiltering", True)


def test_prompt_injection_recipe_shape() -> None:
    """Three base models x three defenses: the undefended model sees plain data (the struq_sft preset
    alone would apply the StruQ transform), ASR and utility are measured per (base, defense)."""
    exp = expand_file(next(p for p in RECIPES if p.stem == "prompt_injection"))
    by_stage: dict[str, list] = {}
    for d in exp.drafts:
        by_stage.setdefault(d.params["stage"], []).append(d)
    bases, defenses, attacks = 3, 3, 3
    assert {k: len(v) for k, v in by_stage.items()} == {
        "undefended": bases, "struq": bases, "secalign": bases, "attacked": bases * defenses * attacks,
        "asr": bases * defenses, "utility": bases * defenses, "judge": bases * defenses}
    assert {d.spec["transform"] for d in by_stage["undefended"]} == {"none"}
    assert {d.spec["transform"] for d in by_stage["struq"]} == {"struq"}
    assert {(d.spec["transform"], d.spec["method"]) for d in by_stage["secalign"]} == {("secalign", "dpo")}
    index = {id(d): i for i, d in enumerate(exp.drafts)}
    undefended = {d.params["base"]: index[id(d)] for d in by_stage["undefended"]}
    for d in by_stage["attacked"]:
        assert d.spec["defense_filter"] is (d.params["defense"] != "none")
        if d.params["defense"] == "none":
            assert d.depends_on == (undefended[d.params["base"]],)
    attacked = {index[id(d)]: d for d in by_stage["attacked"]}
    for d in by_stage["asr"]:  # one ASR job per (base, defense) over that pair's attacks, none other
        ups = [attacked[i] for i in d.depends_on]
        assert sorted(u.params["attack"] for u in ups) == ["completion_real", "completion_realcmb", "ignore"]
        assert {(u.params["base"], u.params["defense"]) for u in ups} == {(d.params["base"], d.params["defense"])}
    judge = by_stage["judge"][0].spec["scorers"][0]
    assert (judge["endpoint_model"], judge["reference_field"]) == ("gpt-4-1106-preview", "output")
