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
    assert len(by_stage["generate"]) == len(by_stage["quality"]) == teachers
    # a 70B/72B teacher's bf16 weights (~140 GB) fit no single 80 GB card: vLLM shards them over 4
    big = {d.name: d.gpus_requested for d in by_stage["generate"] if "70b" in d.name or "72b" in d.name}
    assert set(big.values()) == {4} and len(big) == 2
    assert {d.spec["backend"] for d in by_stage["generate"]} == {"vllm"}
    for stage in ("compat", "sft", "answer", "judge", "answer_ah", "arena_hard", "ap"):
        assert len(by_stage[stage]) == teachers * students, stage
    sft = by_stage["sft"][0].spec
    # table 5 on one GPU: lr 2e-5, 2 epochs, effective batch 32, cosine, warmup 100, 4096 tokens
    assert (sft["learning_rate"], sft["epochs"], sft["lr_scheduler"], sft["warmup_steps"], sft["max_seq_len"]) == (2e-5, 2, "cosine", 100, 4096)
    assert sft["per_device_batch"] * sft["grad_accum"] == 32


def test_car_recipe_judges_against_gpt4_turbo_and_arena_hard_and_correlates_against_ap() -> None:
    """AlpacaEval 2's baseline is GPT-4 Turbo (config alpaca_eval_gpt4_baseline), not davinci-003; AP =
    mean(AE2 LC, Arena-Hard WR) per pair; the three RMs and GPT-2's IFD run once per teacher."""
    by_stage = _stages("car_teacher_selection")
    answer = by_stage["answer"][0].spec["dataset"]
    assert (answer["path"], answer["config"], answer["split"]) == ("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline", "eval")
    judge = by_stage["judge"][0].spec["scorers"][0]
    assert judge["reference_field"] == "output" and judge["endpoint_model"] == "gpt-4-1106-preview"
    assert judge["baseline"] == {"model": "gpt4_1106_preview", "dataset": "tatsu-lab/alpaca_eval",
                                 "config": "alpaca_eval_gpt4_baseline", "field": "output"}
    ah = by_stage["arena_hard"][0].spec["scorers"][0]
    assert (ah["type"], ah["endpoint_model"], ah["temperature"], ah["baseline"]["model"]) == (
        "arena_hard", "gpt-4-1106-preview", 0.0, "gpt-4-0314")
    ap = by_stage["ap"][0]
    assert ap.spec["command"][2] == "engine.jobs.average_performance" and len(ap.depends_on) == 2
    quality = by_stage["quality"][0].spec
    assert [s.get("field") for s in quality["scorers"] if s["type"] == "reward"] == ["reward_rm1", "reward_rm2", "reward_rm3"]
    compat = by_stage["compat"][0].spec
    assert [s["type"] for s in compat["scorers"]] == ["loss"]  # only the student's loss is per pair
    assert {"reward_rm1", "reward_rm2", "reward_rm3", "gpt2_ifd", "gpt2_ppl", "length_tokens"} <= set(compat["carry"])
    assert compat["car_reward_field"] == "reward_rm3"


def test_expo_recipe_alphas() -> None:
    exp = expand_file(next(p for p in RECIPES if p.stem == "expo"))
    merges = [d for d in exp.drafts if d.kind == "merge"]
    assert [d.spec["alpha"] for d in merges] == [0.0, 0.1, 0.2, 0.3, 0.5]
    assert all(d.spec["aligned"]["path"] == "UCLA-AGI/Mistral7B-PairRM-SPPO" for d in merges)
    # §8.3: ExPO's evaluation sampling, and AlpacaEval 2's GPT-4 Turbo baseline
    answer = next(d for d in exp.drafts if d.params["stage"] == "answer").spec
    assert (answer["temperature"], answer["top_k"], answer["top_p"], answer["presence_penalty"],
            answer["frequency_penalty"], answer["max_new_tokens"], answer["seed"]) == (0.7, 50, 0.9, 0.1, 0.1, 2048, 42)
    assert answer["dataset"]["config"] == "alpaca_eval_gpt4_baseline"
    judge = next(d for d in exp.drafts if d.params["stage"] == "judge").spec["scorers"][0]
    assert judge["baseline"]["model"] == "gpt4_1106_preview"


def test_car_recipe_scores_ifd_under_gpt2_by_default() -> None:
    exp = expand_file(next(p for p in RECIPES if p.stem == "car_teacher_selection"))
    quality = next(d for d in exp.drafts if d.params["stage"] == "quality").spec
    gpt2 = next(s for s in quality["scorers"] if s.get("prefix") == "gpt2")
    assert (gpt2["model"]["path"], gpt2["template"], gpt2["ifd"]) == ("openai-community/gpt2", "superfiltering", True)


def test_prompt_injection_recipe_shape() -> None:
    """Three base models x three defenses: the undefended model sees plain data (the struq_sft preset
    alone would apply the StruQ transform), ASR and utility are measured per (base, defense)."""
    exp = expand_file(next(p for p in RECIPES if p.stem == "prompt_injection"))
    by_stage: dict[str, list] = {}
    for d in exp.drafts:
        by_stage.setdefault(d.params["stage"], []).append(d)
    bases, defenses = 3, 3
    assert {k: len(v) for k, v in by_stage.items()} == {
        "undefended": bases, "struq": bases, "secalign": bases, "attacked": bases * defenses,
        "asr": bases * defenses, "utility": bases * defenses, "judge": bases * defenses}
    assert {d.spec["transform"] for d in by_stage["undefended"]} == {"none"}
    assert {d.spec["transform"] for d in by_stage["struq"]} == {"struq"}
    assert {(d.spec["transform"], d.spec["method"]) for d in by_stage["secalign"]} == {("secalign", "dpo")}
    index = {id(d): i for i, d in enumerate(exp.drafts)}
    undefended = {d.params["base"]: index[id(d)] for d in by_stage["undefended"]}
    for d in by_stage["attacked"]:  # every attack in one job: each model is loaded once
        assert d.spec["attack"] == ["ignore", "completion_real", "completion_realcmb"]
        assert d.spec["defense_filter"] is (d.params["defense"] != "none")
        if d.params["defense"] == "none":
            assert d.depends_on == (undefended[d.params["base"]],)
    attacked = {index[id(d)]: d for d in by_stage["attacked"]}
    for d in by_stage["asr"]:  # one ASR job per (base, defense) over that pair's attacked records
        (up,) = [attacked[i] for i in d.depends_on]
        assert (up.params["base"], up.params["defense"]) == (d.params["base"], d.params["defense"])
    judge = by_stage["judge"][0].spec["scorers"][0]
    assert (judge["endpoint_model"], judge["reference_field"]) == ("gpt-4-1106-preview", "output")
    assert judge["baseline"]["model"] == "text_davinci_003"  # SecAlign's utility is AlpacaEval against davinci-003


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


def _path(ref) -> str:  # noqa: ANN001
    return ref.get("path") if isinstance(ref, dict) else str(ref)


def _passes(spec: dict) -> list[tuple]:
    """Every (model, records) pass a job makes: what each model reads, as the job's spec names it."""
    kind = spec["kind"]
    if kind == "generate":
        ds = spec["dataset"]
        data = (_path(ds), ds.get("config"), ds.get("split"), ds.get("limit"), spec.get("template"),
                str(spec.get("attack")), spec.get("sanitize"))
        out = [(_path(spec["model"]), data)]
        if spec.get("reward_model"):
            out.append((_path(spec["reward_model"]), data))
        return out
    if kind == "score":
        records = str(spec["records"])
        out = []
        for sc in spec["scorers"]:
            # a trained estimator is its own model (adapter or head) over the base `model` it names
            for key in (("estimator",) if sc.get("estimator") else ("model", "reward_model")):
                if sc.get(key):
                    out.append((_path(sc[key]), records, sc.get("template"), sc.get("question_field")))
            if sc.get("endpoint"):
                out.append((sc["endpoint_model"], records, sc["type"]))
        return out
    if kind == "finetune":
        ds = spec["dataset"]
        return [(_path(spec["model"]), _path(ds), ds.get("limit") if isinstance(ds, dict) else None,
                 spec.get("transform"), spec.get("method"), spec.get("calibration_style"), spec.get("template"))]
    return []


RECIPE_VARIANTS = [(p, v) for p in RECIPES for v in (None, "tiny") if v is None or p.stem != "demo_car"]  # the demo has no variants


@pytest.mark.parametrize(("path", "variant"), RECIPE_VARIANTS, ids=lambda x: getattr(x, "stem", None) or str(x))
def test_no_recipe_makes_the_same_model_pass_twice(path: Path, variant: str | None) -> None:
    """Each thing computed once: a reward model, a reference LM or a judge reads each records set in one job only
    (at the papers' scale a second pass of a 27B reward model over 100k answers is tens of GPU-hours)."""
    seen: dict[tuple, str] = {}
    for d in expand_file(path, variant=variant).drafts:
        for p in _passes(d.spec):
            assert p not in seen, f"{d.name} repeats the pass of {seen[p]}: {p}"
            seen[p] = d.name
    assert seen


def test_results_caption_names_each_recipes_judge_baseline() -> None:
    """The results view says what a win rate was against: GPT-4 Turbo for AlpacaEval 2, davinci-003 for SecAlign."""
    from db.queries import ResultRow
    from tui.screens.results import _baselines

    def rows(stem: str) -> list[ResultRow]:
        return [ResultRow(i, d.name, d.kind, "succeeded", d.params, d.spec, 50.0)
                for i, d in enumerate(expand_file(next(p for p in RECIPES if p.stem == stem)).drafts)
                if d.params["stage"] == "judge"]

    assert _baselines(rows("expo")) == ["gpt4_1106_preview (alpaca_eval_gpt4_baseline)"]
    assert _baselines(rows("car_teacher_selection")) == ["gpt4_1106_preview (alpaca_eval_gpt4_baseline)"]
    assert _baselines(rows("prompt_injection")) == ["text_davinci_003 (alpaca_eval)"]
