"""DPO through the finetune job (docs/science.md §9.3): the worked example, and a first step checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from job_harness import run_inprocess

PAIRS = [{"prompt": f"Say {i}.", "chosen": f"The number {i}.", "rejected": f"No {i + 1} never."} for i in range(4)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def dpo_spec(tiny, data: str, **kw) -> dict:  # noqa: ANN001, ANN003
    spec = dict(kind="finetune", method="dpo", model=str(tiny.llama), dataset=data, template="raw",
                learning_rate=1e-3, max_steps=3, per_device_batch=4, warmup_steps=0, dpo_beta=0.1)
    spec.update(kw)
    return spec


def test_worked_example_through_the_function_the_job_calls() -> None:
    import torch

    from engine.metrics import dpo_loss

    t = lambda v: torch.tensor([v], dtype=torch.float32)  # noqa: E731
    loss = dpo_loss(t(-10.0), t(-20.0), t(-12.0), t(-15.0), 0.1)  # policy w, policy l, ref w, ref l
    assert float(loss) == pytest.approx(0.403186, abs=1e-6)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.7)), rel=1e-6)


def _hand_logps(model_dir: Path, tok, prompt: str, response: str) -> float:  # noqa: ANN001
    """Σ log p(response token | prefix) with the prefix's own token count as the boundary (§0)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(prompt + response, return_tensors="pt")["input_ids"]
    n_prompt = len(tok(prompt)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    return float(logp[torch.arange(len(targets)), targets][n_prompt - 1 :].sum())


def test_first_step_loss_and_rewards_match_a_hand_computation(tiny, tmp_path) -> None:  # noqa: ANN001
    """Policy = the Llama tiny model, reference = the Qwen2 one (same tokenizer), so the margin is not 0."""
    from transformers import AutoTokenizer

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    res = run_inprocess(tmp_path / "run", dpo_spec(tiny, data, reference=str(tiny.qwen2), max_steps=1))
    assert res.returncode == 0, res.errors()
    tok = AutoTokenizer.from_pretrained(tiny.tokenizer)
    eos = tok.eos_token
    losses, margins, correct = [], [], 0
    for p in PAIRS:
        pw = _hand_logps(tiny.llama, tok, p["prompt"], p["chosen"] + eos)
        pl = _hand_logps(tiny.llama, tok, p["prompt"], p["rejected"] + eos)
        rw = _hand_logps(tiny.qwen2, tok, p["prompt"], p["chosen"] + eos)
        rl = _hand_logps(tiny.qwen2, tok, p["prompt"], p["rejected"] + eos)
        m = 0.1 * ((pw - rw) - (pl - rl))
        losses.append(math.log1p(math.exp(-m)))  # −log σ(m)
        margins.append(m)
        correct += m > 0
    assert res.series("loss")[1] == pytest.approx(sum(losses) / 4, rel=1e-5)
    assert res.series("reward_margin")[1] == pytest.approx(sum(margins) / 4, rel=1e-4, abs=1e-6)
    assert res.series("reward_accuracy")[1] == pytest.approx(correct / 4)


def test_lora_dpo_uses_the_adapter_disabled_model_as_reference(tiny, tmp_path) -> None:  # noqa: ANN001
    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    res = run_inprocess(tmp_path / "run", dpo_spec(tiny, data, lora={"r": 8, "alpha": 16}, learning_rate=5e-3, max_steps=6))
    assert res.returncode == 0, res.errors()
    loss = res.series("loss")
    assert loss[1] == pytest.approx(math.log(2), abs=1e-6)  # LoRA B starts at 0: policy == reference
    assert res.series("reward_margin")[1] == pytest.approx(0.0, abs=1e-7)
    assert loss[6] < loss[1] and res.series("reward_accuracy")[6] == 1.0
    for name in ("rewards_chosen", "rewards_rejected", "logps_chosen", "logps_rejected"):
        assert len(res.series(name)) == 6
    out = tmp_path / "run" / "outputs" / "model"
    assert (out / "adapter_model.safetensors").is_file()


def test_secalign_preset_runs_from_alpaca_records_with_the_delimiter_tokens(tiny, tmp_path) -> None:  # noqa: ANN001
    """transform: secalign (prompt/chosen/rejected built from Alpaca records), template struq; the
    starting model lacks the delimiter tokens, so they are added (§9.1) and the merged model saved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"instruction": f"Summarize text {i}.", "input": f"The cat {i} sat on the mat" if i % 4 else "",
             "output": f"A cat {i}."} for i in range(12)]
    data = write_jsonl(tmp_path / "alpaca.jsonl", rows)
    spec = dict(kind="finetune", preset="secalign_dpo", model=str(tiny.llama), dataset=data, max_steps=2,
                per_device_batch=2, grad_accum=2, lora={"r": 4, "target_modules": ["q_proj", "v_proj"]})
    res = run_inprocess(tmp_path / "run", spec)
    assert res.returncode == 0, res.errors()
    assert any("added tokens [MARK] [INST] [INPT] [RESP] [COLN]" in e["message"] for e in res.infos())
    [info] = [e for e in res.infos() if "pairs:" in e["message"]]
    assert info["records"] == 9  # the 3 input-less records are skipped (§9.2)
    out = tmp_path / "run" / "outputs" / "model"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.convert_tokens_to_ids("[MARK]") != tok.unk_token_id
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert res.artifacts()[0]["meta"]["format"] == "full"
