"""The merge job on real saved checkpoints: ExPO's worked vectors (§8.1), LoRA merge logits, averaging, refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from job_harness import run_inprocess

NORM = "model.norm.weight"


def _copy_with(src: Path, dst: Path, edits: dict, dtype=None) -> Path:  # noqa: ANN001
    """A copy of a saved model with some tensor entries set (and optionally another dtype)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    for key, (index, values) in edits.items():
        t = tensors[key].clone()
        t[index] = values
        tensors[key] = t
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
        cfg = json.loads((dst / "config.json").read_text())
        cfg["dtype"] = str(dtype).removeprefix("torch.")
        (dst / "config.json").write_text(json.dumps(cfg))
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def pair(tiny, tmp_path_factory):  # noqa: ANN001, ANN201
    """An 'SFT' and an 'aligned' checkpoint holding §8.1's test values, otherwise two different models."""
    import torch

    root = tmp_path_factory.mktemp("expo")
    sft = _copy_with(tiny.llama, root / "sft", {NORM: (slice(0, 3), torch.tensor([1.0, -2.0, 0.50]))})
    # aligned = the same model moved a little: every tensor differs from sft, with the worked values in place
    from safetensors.torch import load_file, save_file

    aligned = root / "aligned"
    shutil.copytree(sft, aligned)
    g = torch.Generator().manual_seed(0)
    tensors = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in load_file(sft / "model.safetensors").items()}
    tensors[NORM][:3] = torch.tensor([1.2, -1.5, 0.62])
    save_file(tensors, aligned / "model.safetensors", metadata={"format": "pt"})
    (aligned / "marker.txt").write_text("aligned side file")
    return sft, aligned


def merge(tmp_path: Path, **kw):  # noqa: ANN003, ANN201
    return run_inprocess(tmp_path / "run", dict(kind="merge", **kw))


def test_expo_gives_the_worked_vectors_on_every_tensor(pair, tmp_path) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    sft, aligned = pair
    res = merge(tmp_path, method="expo", sft=str(sft), aligned=str(aligned), alpha=0.3)
    assert res.returncode == 0, res.errors()
    out = tmp_path / "run" / "outputs" / "model"
    merged = load_file(out / "model.safetensors")
    assert merged[NORM][:3].tolist() == pytest.approx([1.26, -1.35, 0.656], abs=1e-6)
    s, a = load_file(sft / "model.safetensors"), load_file(aligned / "model.safetensors")
    assert merged.keys() == a.keys()
    for k in a:  # every tensor, embeddings and lm_head included
        assert torch.allclose(merged[k], a[k] + 0.3 * (a[k] - s[k]), atol=1e-6), k
    assert (out / "marker.txt").read_text() == "aligned side file"  # the aligned model's side files
    assert (out / "tokenizer.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)  # loads as a model
    [art] = res.artifacts()
    assert art["meta"]["alpha"] == 0.3 and art["meta"]["compute_dtype"] == "float32"
    assert not list((tmp_path / "run" / "outputs").glob(".*"))


@pytest.mark.parametrize(("alpha", "expect"), [(0.0, "aligned"), (-1.0, "sft")])
def test_expo_identities(pair, tmp_path, alpha, expect) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file

    sft, aligned = pair
    assert merge(tmp_path, method="expo", sft=str(sft), aligned=str(aligned), alpha=alpha).returncode == 0
    merged = load_file(tmp_path / "run" / "outputs" / "model" / "model.safetensors")
    target = load_file((aligned if expect == "aligned" else sft) / "model.safetensors")
    assert all(torch.allclose(merged[k], target[k], atol=1e-6) for k in target)


def test_expo_keeps_a_bf16_source_dtype_and_allows_alpha_far_above_one(pair, tmp_path) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file

    sft, aligned = pair
    sft16 = _copy_with(sft, tmp_path / "sft16", {}, dtype=torch.bfloat16)
    al16 = _copy_with(aligned, tmp_path / "al16", {}, dtype=torch.bfloat16)
    res = merge(tmp_path, method="expo", sft=str(sft16), aligned=str(al16), alpha=8.0)
    assert res.returncode == 0, res.errors()
    merged = load_file(tmp_path / "run" / "outputs" / "model" / "model.safetensors")
    s, a = load_file(sft16 / "model.safetensors"), load_file(al16 / "model.safetensors")
    for k in a:
        assert merged[k].dtype == torch.bfloat16
        want = (9.0 * a[k].float() - 8.0 * s[k].float()).to(torch.bfloat16)  # fp32 arithmetic, cast back
        assert torch.equal(merged[k], want), k
    assert res.artifacts()[0]["meta"]["dtype"] == "bfloat16"


def test_incompatible_checkpoints_are_refused_before_writing(tiny, pair, tmp_path) -> None:  # noqa: ANN001
    sft, _ = pair
    res = merge(tmp_path, method="expo", sft=str(sft), aligned=str(tiny.qwen2), alpha=0.3)  # Qwen2 has q/k/v biases
    assert res.returncode == 3
    [err] = res.errors()
    assert "tensor names differ" in err["message"] and "bias" in err["message"] and "\n" not in err["message"]
    outputs = tmp_path / "run" / "outputs"
    assert not outputs.exists() or not any(outputs.iterdir())
    bigger = tmp_path / "big"
    from engine.tiny import build_causal_lm

    build_causal_lm(bigger, tiny.tokenizer, hidden=32, seed=5)
    res = run_inprocess(tmp_path / "run2", dict(kind="merge", method="expo", sft=str(sft), aligned=str(bigger)))
    assert res.returncode == 3 and "is [" in res.errors()[0]["message"]


def test_average_is_the_weighted_mean(pair, tmp_path) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file

    sft, aligned = pair
    res = merge(tmp_path, method="average", models=[str(sft), str(aligned)], weights=[3.0, 1.0])
    assert res.returncode == 0, res.errors()
    merged = load_file(tmp_path / "run" / "outputs" / "model" / "model.safetensors")
    s, a = load_file(sft / "model.safetensors"), load_file(aligned / "model.safetensors")
    assert all(torch.allclose(merged[k], 0.75 * s[k] + 0.25 * a[k], atol=1e-6) for k in s)


def test_merged_lora_gives_the_adapter_models_logits(tiny, tmp_path) -> None:  # noqa: ANN001
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny.llama)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))  # random B: a non-trivial adapter
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    res = merge(tmp_path, method="lora", adapter=str(adapter))  # base taken from adapter_config.json
    assert res.returncode == 0, res.errors()
    out = tmp_path / "run" / "outputs" / "model"
    assert not (out / "adapter_config.json").exists() and (out / "tokenizer.json").is_file()
    ids = torch.randint(5, 500, (2, 12))
    with torch.no_grad():
        ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny.llama), adapter).eval()(ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(tiny.llama).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()(ids).logits
    assert not torch.allclose(ref, base_logits, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(merged, ref, atol=1e-5, rtol=1e-5)


def test_lora_merge_refuses_a_folder_that_is_not_an_adapter(tiny, tmp_path) -> None:  # noqa: ANN001
    res = merge(tmp_path, method="lora", adapter=str(tiny.llama))
    assert res.returncode == 3 and "adapter_config.json" in res.errors()[0]["message"]
