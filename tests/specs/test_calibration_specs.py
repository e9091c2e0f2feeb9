"""Spec pieces the calibration recipes added: stage params, vars naming shipped data, the new scorer fields."""

from __future__ import annotations

import pytest

from engine.specfile import SpecError, builtin_vars, expand

PIPE = {
    "experiment": "e", "vars": {"data": "${labdeck.data}/calibration/tiny_pool.jsonl"},
    "matrix": {"method": [{"name": "probe"}]},
    "stages": [
        {"name": "a", "kind": "command", "command": ["true"], "params": {"method": "zero_shot"}},
        {"name": "b", "kind": "command", "foreach": "method", "command": ["echo", "${vars.data}"]},
    ],
}


def test_stage_params_are_recorded_and_vars_may_name_shipped_data() -> None:
    exp = expand(PIPE)
    assert exp.drafts[0].params == {"stage": "a", "method": "zero_shot"}
    assert exp.drafts[1].params == {"stage": "b", "method": "probe"}
    assert exp.drafts[1].spec["command"][1] == builtin_vars()["data"] + "/calibration/tiny_pool.jsonl"


@pytest.mark.parametrize("params", [["x"], {"stage": "x"}, {"k": [1]}])
def test_bad_stage_params_are_one_line_errors(params: object) -> None:
    bad = {**PIPE, "stages": [{**PIPE["stages"][0], "params": params}]}
    with pytest.raises(SpecError, match=r"stages\[0\]\.params"):
        expand(bad)


def _score(*scorers: dict) -> dict:
    return {"experiment": "e", "name": "n", "kind": "score", "records": "r.jsonl", "scorers": list(scorers)}


@pytest.mark.parametrize(("scorer", "why"), [
    ({"type": "confidence"}, "give `model`"),
    ({"type": "confidence", "estimator": "est", "chat_template": True}, "chat_template"),
    ({"type": "correctness", "mode": "judge"}, "exactly one of"),
    ({"type": "correctness", "mode": "substring", "model": "m"}, "needs no judge"),
    ({"type": "correctness", "mode": "judge", "endpoint": "https://x/v1"}, "endpoint_model"),
    ({"type": "correctness", "mode": "judge", "model": "m", "judge_prompt": "{question} {answer}"}, "{target}"),
])
def test_scorer_specs_refuse_incoherent_fields(scorer: dict, why: str) -> None:
    with pytest.raises(SpecError, match=f"scorers.*{why}".replace("{", r"\{").replace("}", r"\}")):
        expand(_score(scorer))


def test_generate_sanitize_is_off_by_default() -> None:
    job = expand({"experiment": "e", "name": "g", "kind": "generate", "model": "m", "dataset": "d.jsonl"}).drafts[0]
    assert job.spec["sanitize"] is False
