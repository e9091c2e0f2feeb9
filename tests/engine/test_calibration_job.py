"""Calibration tuning (§10.3): probe, LoRA + head, LoRA + Prompt, temperature scaling, metrics."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from job_harness import run_inprocess


@pytest.fixture
def qa(tmp_path: Path) -> str:
    rng = random.Random(0)
    rows = []
    for i in range(40):
        y = rng.random() < 0.5
        rows.append({"question": f"Question: what is {i} plus one?\nAnswer:", "answer": f"{i + 1 if y else 'no idea'}",
                     "label": bool(y), "target": str(i + 1)})
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def cal(tiny, data: str, style: str, **kw) -> dict:  # noqa: ANN001, ANN003
    spec = dict(kind="finetune", method="calibration", calibration_style=style, model=str(tiny.llama), dataset=data,
                template="raw", learning_rate=1e-3, max_steps=8, per_device_batch=4, warmup_steps=0,
                validation_fraction=0.25)
    spec.update(kw)
    return spec


@pytest.mark.parametrize("style", ["probe", "lora", "lora_prompt"])
def test_each_style_trains_and_reports_ece_and_auroc(tiny, qa, tmp_path, style) -> None:  # noqa: ANN001
    from safetensors.torch import load_file

    res = run_inprocess(tmp_path / "run", cal(tiny, qa, style, jsd_weight=1.0 if style == "lora_prompt" else 0.0))
    assert res.returncode == 0, res.errors()
    assert len(res.series("loss")) == 8
    for name in ("val_ece_two_sided", "val_ece_one_sided", "val_auroc", "val_acc", "val_unc_acc",
                 "val_ts_ece_two_sided", "temperature"):
        value = res.summary(name)
        assert math.isfinite(value), name
    assert 0.0 <= res.summary("val_ece_two_sided") <= 0.5
    out = tmp_path / "run" / "outputs" / "model"
    info = json.loads((out / "calibration.json").read_text())
    assert info["style"] == style and info["temperature"] == pytest.approx(res.summary("temperature"))
    # recorded with the estimator: calibration-tuning's temperature fit, and (LoRA + Prompt) the JSD on the gold target
    assert info["temperature_fit"] == {"method": "adamw", "optimizer": "AdamW", "lr": 1e-2, "weight_decay": 1e-2,
                                       "schedule": "cosine", "steps": 2000, "batch_size": 64}
    assert info["jsd_text"] == ("question + gold target" if style == "lora_prompt" else None)
    if style == "lora_prompt":
        assert (out / "adapter_model.safetensors").is_file() and info["choice_token_ids"]
        assert len(res.series("jsd")) == 8 and res.series("jsd")[1] == pytest.approx(0.0, abs=1e-6)  # B = 0 at start
    else:
        head = load_file(out / "calibration_head.safetensors")
        assert [tuple(v.shape) for k, v in sorted(head.items()) if k.endswith("weight")] == [(256, 64), (128, 256), (64, 128), (2, 64)]
        assert (out / "adapter_model.safetensors").is_file() == (style == "lora")
    preds = [json.loads(line) for line in (tmp_path / "run" / "outputs" / "validation_predictions.jsonl").open()]
    assert len(preds) == 10 and all(0 <= p["p_correct_ts"] <= 1 for p in preds)


def test_the_probe_learns_an_easy_signal(tiny, qa, tmp_path) -> None:  # noqa: ANN001
    """'no idea' answers are wrong and numbers right: frozen features separate them; AUROC well above chance."""
    res = run_inprocess(tmp_path / "run", cal(tiny, qa, "probe", max_steps=60, learning_rate=3e-3))
    assert res.returncode == 0
    assert res.summary("val_auroc") >= 0.8


def test_uncertainty_query_text_is_section_10_2s() -> None:
    from engine.jobs.calibration import query_text

    assert query_text("Question: 2+2?\nAnswer:", "4") == (
        "Question: 2+2?\nAnswer: 4\n\nIs the proposed answer correct?\nChoices:\n(i): no\n(ii): yes\nAnswer:")


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    z_true = rng.normal(0, 2, size=(4000, 2))
    p1 = 1 / (1 + np.exp(z_true[:, 0] - z_true[:, 1]))
    y = (rng.random(4000) < p1).astype(int)
    from engine.jobs.calibration import fit_temperature

    assert fit_temperature(z_true * 3.0, y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(z_true / 2.0, y) == pytest.approx(0.5, rel=0.1)
    # calibration-tuning's own fit (AdamW, 2000 cosine steps, weight decay on log T) lands near, not on, the optimum
    exact = fit_temperature(z_true * 3.0, y, method="lbfgs")
    official = fit_temperature(z_true * 3.0, y, method="adamw")
    assert official == pytest.approx(exact, rel=0.05) and official != exact


def test_jsd_is_symmetric_bounded_and_zero_on_equal_distributions() -> None:
    import torch

    from engine.jobs.calibration import jsd_per_token

    a, b = torch.randn(5, 11), torch.randn(5, 11)
    assert torch.allclose(jsd_per_token(a, a), torch.zeros(5), atol=1e-6)
    assert torch.allclose(jsd_per_token(a, b), jsd_per_token(b, a), atol=1e-6)
    far = jsd_per_token(torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]]))
    assert float(far) == pytest.approx(math.log(2), abs=1e-5)


def test_labels_must_be_binary(tiny, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a", "label": "maybe"}) + "\n" * 1)
    res = run_inprocess(tmp_path / "run", cal(tiny, str(path), "probe", per_device_batch=1))
    assert res.returncode == 3 and "correctness label" in res.errors()[0]["message"]
