"""Spec files: sweeps and pipelines expand into the right jobs and dependencies; bad files say why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.specfile import SpecError, expand, expand_file


def test_sweep_2x3_with_2_seeds_makes_12_jobs() -> None:
    exp = expand({
        "experiment": "sw", "name": "ft", "kind": "finetune", "model": "m", "dataset": "d.jsonl",
        "sweep": {"grid": {"learning_rate": ["1e-5", 2e-5], "lora.r": [4, 8, 16]}, "seeds": [1, 2]},
    })
    assert len(exp.drafts) == 12
    points = {(d.spec["learning_rate"], d.spec["lora"]["r"], d.spec["seed"]) for d in exp.drafts}
    assert len(points) == 12
    first = exp.drafts[0]
    assert first.params == {"learning_rate": 1e-5, "lora.r": 4, "seed": 1}
    assert first.name == "ft[learning_rate=1e-5,lora.r=4,seed=1]"
    assert all(d.depends_on == () for d in exp.drafts)


def test_sweep_errors_name_the_grid_field() -> None:
    with pytest.raises(SpecError, match=r"s.yaml: sweep.grid.lr: must be a non-empty list"):
        expand({"experiment": "e", "name": "n", "kind": "command", "command": ["x"], "sweep": {"grid": {"lr": []}}}, "s.yaml")
    with pytest.raises(SpecError, match=r"s.yaml: learning_rate: Input should be greater than 0"):
        expand({"experiment": "e", "name": "n", "kind": "finetune", "model": "m", "dataset": "d",
                "sweep": {"grid": {"learning_rate": [1e-5, -1]}}}, "s.yaml")


PIPELINE = {
    "experiment": "car",
    "matrix": {"teacher": [{"name": "t1", "model": "/m/t1"}, {"name": "t2", "model": "/m/t2"}, {"name": "t3", "model": "/m/t3"}]},
    "defaults": {"gpus": 0},
    "stages": [
        {"name": "gen", "kind": "generate", "foreach": "teacher", "model": "${matrix.teacher.model}", "dataset": "i.jsonl"},
        {"name": "sft", "kind": "finetune", "foreach": ["teacher"], "model": "student", "dataset": "${stages.gen.output}"},
        {"name": "all", "kind": "score", "records": "${stages.gen.output}", "scorers": [{"type": "length"}], "needs": ["sft"]},
    ],
}


def test_pipeline_of_three_stages_has_the_right_dependencies() -> None:
    exp = expand(PIPELINE, "p.yaml")
    names = [d.name for d in exp.drafts]
    assert names == ["gen[teacher=t1]", "gen[teacher=t2]", "gen[teacher=t3]",
                     "sft[teacher=t1]", "sft[teacher=t2]", "sft[teacher=t3]", "all"]
    assert [d.depends_on for d in exp.drafts] == [(), (), (), (0,), (1,), (2,), (0, 1, 2, 3, 4, 5)]
    assert exp.drafts[1].spec["model"]["path"] == "/m/t2"
    assert exp.drafts[4].params == {"stage": "sft", "teacher": "t2"}
    resolve = exp.resolver(Path("/h"))
    ids = [10, 11, 12, 13, 14, 15, 16]
    # Stored symbolic, by job id; the worker makes them paths when it prepares the run folder.
    assert resolve(4, exp.drafts[4].spec, ids)["dataset"]["path"] == "${job:11.output}"
    assert resolve(6, exp.drafts[6].spec, ids)["records"] == [f"${{job:{i}.output}}" for i in (10, 11, 12)]


@pytest.mark.parametrize("change,message", [
    (lambda p: p["stages"][1].update(dataset="${stages.gne.output}"), r"stages\[1\]: \$\{stages.gne.output\}: refers to stage 'gne'"),
    (lambda p: p["stages"][1].update(foreach="student"), r"stages\[1\].foreach: no matrix axis named 'student'"),
    (lambda p: p["stages"][2].update(needs=["later"]), r"stages\[2\].needs: no earlier stage named 'later'"),
    (lambda p: p["stages"][1].update(name="gen"), r"stages\[1\].name: stage 'gen' is defined twice"),
    (lambda p: p["stages"][0].update(temperature="hot"), r"stages\[0\].temperature: Input should be a valid number"),
    (lambda p: p.update(extra=1), r"p.yaml: extra: unknown top-level field"),
    (lambda p: p["stages"][1].update(model="${stages.gen.output} and more"), r"names 3 jobs|needs exactly one"),
])
def test_pipeline_errors(change, message: str) -> None:
    import copy

    p = copy.deepcopy(PIPELINE)
    change(p)
    if "needs exactly one" in message:  # a stage without foreach sees all three gen jobs
        p["stages"][1].pop("foreach")
    with pytest.raises(SpecError, match=message):
        expand(p, "p.yaml")


def test_file_errors(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("experiment: e\nname: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+: malformed YAML"):
        expand_file(bad_yaml)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin.yaml: not UTF-8 text"):
        expand_file(latin)
    with pytest.raises(SpecError, match=r"missing.yaml: no such file"):
        expand_file(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(SpecError, match=r"scalar.yaml: a spec file must be a mapping"):
        expand_file(scalar)
    js = tmp_path / "s.json"
    js.write_text('{"experiment": "e", ')
    with pytest.raises(SpecError, match=r"s.json: line 1: malformed JSON"):
        expand_file(js)


def test_vars_and_builtin_variables() -> None:
    doc = {
        "experiment": "v", "vars": {"student": "Qwen/Qwen2-1.5B", "steps": 5},
        "stages": [{"name": "ft", "kind": "finetune", "model": "${vars.student}", "max_steps": "${vars.steps}",
                    "dataset": "${labdeck.data}/demo_train.jsonl", "description": "student ${vars.student}"}],
    }
    (d,) = expand(doc, "v.yaml").drafts
    assert d.spec["model"]["path"] == "Qwen/Qwen2-1.5B" and d.spec["max_steps"] == 5
    assert d.spec["dataset"]["path"].endswith("engine/data/demo_train.jsonl")
    assert d.spec["description"] == "student Qwen/Qwen2-1.5B"
    (d,) = expand(doc, "v.yaml", {"student": "/models/mine"}).drafts
    assert d.spec["model"]["path"] == "/models/mine"
    with pytest.raises(SpecError, match=r"v.yaml: vars: --var nope: the file declares no such variable"):
        expand(doc, "v.yaml", {"nope": "1"})
    doc["stages"][0]["model"] = "${vars.teacher}"
    with pytest.raises(SpecError, match=r"v.yaml: \$\{vars.teacher\}: no such variable \(known: steps, student\)"):
        expand(doc, "v.yaml")


def test_var_values_may_name_labdeck_places_and_later_stages() -> None:
    """`instructions: ${labdeck.data}/demo_train.jsonl` in `vars:` (or a --var) reaches the job as a real path;
    a stage reference in a value still wires the dependency; a variable naming another is refused."""
    doc = {
        "experiment": "v",
        "vars": {"data": "${labdeck.data}/demo_train.jsonl", "rm": "${stages.build.outputs}/reward", "py": "${labdeck.python}"},
        "stages": [
            {"name": "build", "kind": "command", "command": ["${vars.py}", "-m", "engine.tiny", "outputs", "--reward", "reward"]},
            {"name": "gen", "kind": "generate", "model": "${vars.rm}", "dataset": "${vars.data}"},
        ],
    }
    build, gen = expand(doc, "v.yaml").drafts
    data = Path(__file__).parents[2] / "engine" / "data" / "demo_train.jsonl"
    assert gen.spec["dataset"]["path"] == str(data) and data.is_file()
    assert build.spec["command"][0] == sys.executable
    assert gen.depends_on == (0,) and gen.spec["model"]["path"] == "${@0.outputs}/reward"
    (_, gen) = expand(doc, "v.yaml", {"data": "${labdeck.data}/demo_eval.jsonl"}).drafts
    assert gen.spec["dataset"]["path"] == str(data.with_name("demo_eval.jsonl"))
    doc["vars"]["data"] = "${vars.py}/x"
    with pytest.raises(SpecError, match=r"v.yaml: vars.data: \$\{vars.py\}: a variable's value cannot refer to another variable"):
        expand(doc, "v.yaml")


VARIANT_PIPELINE = {
    **PIPELINE,
    "vars": {"data": "i.jsonl"},
    "stages": [{**PIPELINE["stages"][0], "dataset": "${vars.data}", "temperature": 0.7, "top_p": 0.9}, *PIPELINE["stages"][1:]],
    "variants": {
        "tiny": {
            "description": "two local teachers",
            "experiment": "car-tiny",
            "vars": {"data": "/local/few.jsonl"},
            "matrix": {"teacher": [{"name": "a", "model": "${stages.build.outputs}/a"}, {"name": "b", "model": "/m/b"}]},
            "stages": {"gen": {"max_new_tokens": 8, "top_p": None}, "sft": {"max_steps": 3}},
            "add_stages": [{"name": "build", "kind": "command", "command": ["python", "-m", "engine.tiny", "outputs", "--lm", "a"]}],
        },
    },
}


def test_variant_overlays_the_pipeline_and_keeps_its_wiring() -> None:
    full = expand(VARIANT_PIPELINE, "p.yaml")
    assert [d.name for d in full.drafts][:3] == ["gen[teacher=t1]", "gen[teacher=t2]", "gen[teacher=t3]"]
    assert {d.spec["experiment"] for d in full.drafts} == {"car"}
    tiny = expand(VARIANT_PIPELINE, "p.yaml", variant="tiny")
    names = [d.name for d in tiny.drafts]
    assert names == ["build", "gen[teacher=a]", "gen[teacher=b]", "sft[teacher=a]", "sft[teacher=b]", "all"]
    assert {d.spec["experiment"] for d in tiny.drafts} == {"car-tiny"}
    gen_a = tiny.drafts[1]
    assert gen_a.depends_on == (0,)  # the matrix value refers to the added build stage
    assert gen_a.spec["dataset"]["path"] == "/local/few.jsonl"
    assert gen_a.spec["max_new_tokens"] == 8 and gen_a.spec["temperature"] == 0.7
    assert gen_a.spec["top_p"] == 1.0  # removed by the variant: back to the default
    assert tiny.drafts[3].spec["max_steps"] == 3 and tiny.drafts[3].depends_on == (1,)
    assert tiny.drafts[5].depends_on == (1, 2, 3, 4)
    # the CLI's --var still wins over the variant's value
    assert expand(VARIANT_PIPELINE, "p.yaml", {"data": "/x.jsonl"}, "tiny").drafts[1].spec["dataset"]["path"] == "/x.jsonl"


@pytest.mark.parametrize("variant,change,message", [
    ("huge", None, r"p.yaml: variants: no variant named 'huge' \(known: tiny\)"),
    ("tiny", lambda v: v.update(stages={"gne": {"n": 2}}), r"variants.tiny.stages.gne: the pipeline has no stage of that name"),
    ("tiny", lambda v: v.update(vars={"nope": 1}), r"variants.tiny.vars.nope: the pipeline declares no such variable"),
    ("tiny", lambda v: v.update(seeds=[1]), r"variants.tiny.seeds: unknown field"),
    ("tiny", lambda v: v.update(stages={"gen": {"name": "g"}}), r"variants.tiny.stages.gen.name: a variant cannot rename"),
    ("tiny", lambda v: v.update(stages={"gen": {"temperature": "hot"}}), r"stages\[1\].temperature: Input should be a valid number"),
    ("tiny", lambda v: v["add_stages"].append({"name": "gen", "kind": "command", "command": ["x"]}), r"stage 'gen' is defined twice"),
])
def test_variant_errors_name_the_field(variant: str, change, message: str) -> None:
    import copy

    p = copy.deepcopy(VARIANT_PIPELINE)
    if change:
        change(p["variants"]["tiny"])
    with pytest.raises(SpecError, match=message):
        expand(p, "p.yaml", variant=variant)


def test_variant_on_a_single_job_is_refused() -> None:
    with pytest.raises(SpecError, match=r"j.yaml: variants: --variant tiny: only a pipeline"):
        expand({"experiment": "e", "name": "n", "kind": "command", "command": ["x"]}, "j.yaml", variant="tiny")
    with pytest.raises(SpecError, match=r"j.yaml: variants: unknown field"):
        expand({"experiment": "e", "name": "n", "kind": "command", "command": ["x"], "variants": {}}, "j.yaml")
