"""FinetuneSpec / MergeSpec: presets that never override explicit fields, and one-line refusals (issue 5)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.specs import dump_spec, parse_spec

BASE = {"kind": "finetune", "experiment": "e", "name": "n", "model": "m", "dataset": "d.jsonl"}


def ft(**kw):  # noqa: ANN003, ANN201
    return parse_spec({**BASE, **kw})


def test_car_table5_preset_matches_science_6_on_one_gpu() -> None:
    s = ft(preset="car_table5")
    assert (s.learning_rate, s.epochs, s.per_device_batch, s.grad_accum) == (2e-5, 2, 1, 32)
    assert (s.lr_scheduler, s.warmup_steps, s.max_seq_len, s.method) == ("cosine", 100, 4096, "sft")


def test_preset_keeps_the_effective_batch_across_gpu_counts() -> None:
    assert ft(preset="car_table5", gpus=4).grad_accum == 8  # the paper's 4 GPUs x 1 x 8
    assert ft(preset="struq_sft").grad_accum * 4 == 128
    assert ft(preset="secalign_dpo", gpus=4).grad_accum == 16  # 4 x 16 x 4 = 256


def test_explicit_fields_win_over_the_preset() -> None:
    s = ft(preset="car_table5", learning_rate=1e-5, grad_accum=4, warmup_steps=10)
    assert (s.learning_rate, s.grad_accum, s.warmup_steps, s.epochs) == (1e-5, 4, 10, 2)
    s = ft(preset="secalign_dpo", lora={"r": 16})
    assert s.lora.r == 16 and s.lora.alpha == 8 and s.lora.target_modules == ["q_proj", "v_proj"]
    assert ft(preset="calibration_tuning", seed=3).seed == 3
    assert ft(preset="calibration_tuning").seed == 137


def test_dumped_spec_round_trips_without_reapplying_the_preset() -> None:
    s = ft(preset="car_table5", learning_rate=1e-5)
    again = parse_spec(dump_spec(s))
    assert again == s


def test_method_record_fields() -> None:
    assert ft(method="dpo").dataset.instruction_field == "prompt"
    assert ft(method="dpo", dataset={"path": "d.jsonl", "instruction_field": "q"}).dataset.instruction_field == "q"
    cal = ft(method="calibration", calibration_style="probe")
    assert (cal.dataset.instruction_field, cal.dataset.output_field) == ("question", "answer")
    assert cal.lora is None
    assert ft(method="calibration").lora.r == 8  # LoRA styles get §10.3's adapter


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"learning_rate": 3.0}, "makes no sense"),
        ({"learning_rate": 0}, "greater than 0"),
        ({"per_device_batch": 0}, "greater than or equal to 1"),
        ({"per_device_batch": 4096, "grad_accum": 4096}, "effective batch"),
        ({"warmup_steps": 10, "warmup_ratio": 0.1}, "not both"),
        ({"max_steps": 10, "warmup_steps": 10}, "leave nothing"),
        ({"transform": "secalign", "template": "struq"}, "needs method dpo"),
        ({"transform": "struq"}, "template: struq"),
        ({"method": "calibration", "calibration_style": "probe", "lora": {"r": 4}}, "frozen features"),
        ({"merge_lora": True}, "needs lora"),
        ({"reference": "x"}, "only DPO"),
        ({"lora": {"target_modules": []}}, "module names"),
        ({"packing": "sometimes"}, "packing"),
    ],
)
def test_settings_that_make_no_sense_are_refused(fields: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        ft(**fields)
    assert needle in str(e.value)


def test_packing_accepts_the_old_boolean() -> None:
    assert ft(packing=False).packing == "off"
    assert ft(packing=True).packing == "auto"


MERGE = {"kind": "merge", "experiment": "e", "name": "n"}


def test_merge_spec_checks() -> None:
    s = parse_spec({**MERGE, "sft": "a", "aligned": "b", "alpha": 25})
    assert s.alpha == 25
    with pytest.raises(ValidationError, match="required"):
        parse_spec({**MERGE, "sft": "a"})
    with pytest.raises(ValidationError, match="same checkpoint"):
        parse_spec({**MERGE, "sft": "a", "aligned": "a"})
    with pytest.raises(ValidationError, match="one weight per model"):
        parse_spec({**MERGE, "method": "average", "models": ["a", "b"], "weights": [1.0]})
    with pytest.raises(ValidationError, match="at least two"):
        parse_spec({**MERGE, "method": "average", "models": ["a"]})
    with pytest.raises(ValidationError, match="not used"):
        parse_spec({**MERGE, "sft": "a", "aligned": "b", "adapter": "x"})
    with pytest.raises(ValidationError, match="sum to zero"):
        parse_spec({**MERGE, "method": "average", "models": ["a", "b"], "weights": [1.0, -1.0]})
    assert parse_spec({**MERGE, "method": "lora", "adapter": "x"}).base is None


def test_specs_stay_torch_free() -> None:
    import subprocess
    import sys

    code = "import sys, engine.specs, engine.specs.finetune, engine.specs.merge; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
