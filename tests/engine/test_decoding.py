"""Where answers stop and how they are penalised: the end-of-turn token of a chat-tuned base model
(eos and end of turn differ, as in Qwen2.5/Llama-3.x/Gemma-2 base models), OpenAI's presence and
frequency penalties (ExPO's sampling, docs/science.md §8.3), and several attacks in one generate job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from job_harness import run_inprocess, write_jsonl

RECORDS = [{"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}."} for i in range(6)]


@pytest.fixture(scope="module")
def base_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base model whose eos (<|endoftext|>) is not its chat template's end of turn (<|im_end|>)."""
    from engine.tiny import BASE_EOS, build_causal_lm, build_tokenizer

    root = tmp_path_factory.mktemp("split")
    texts = [r["instruction"] + " " + r["output"] for r in RECORDS]
    build_tokenizer(root / "tok", texts, eos_token=BASE_EOS)
    return build_causal_lm(root / "base", root / "tok", arch="qwen2", seed=4)


def test_end_of_turn_is_read_off_the_template_and_added_to_the_stop_ids(base_split: Path, tiny) -> None:  # noqa: ANN001
    from transformers import AutoTokenizer

    from engine.jobs._stopping import end_of_turn_ids, stop_ids

    tok = AutoTokenizer.from_pretrained(base_split)
    eos, eot = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == eos != eot
    assert end_of_turn_ids(tok) == [eot]
    assert stop_ids(eos, tok, chat=True) == [eos, eot]
    assert stop_ids(eos, tok, chat=False) == [eos]  # a plain-text format (struq, alpaca) has no turn to end
    tok.chat_template = None
    assert end_of_turn_ids(tok) == []
    same = AutoTokenizer.from_pretrained(tiny.llama)  # eos == end of turn: nothing to add
    assert stop_ids(same.eos_token_id, same, chat=True) == [same.eos_token_id]


def test_a_chat_tuned_base_model_stops_at_its_end_of_turn(base_split: Path, tmp_path: Path) -> None:
    """Fine-tuned with the ChatML template, the model ends its answers with <|im_end|> (trained) and never with
    <|endoftext|> (never seen). The saved model must name <|im_end|> as an end of generation, and the generate job
    must stop there: otherwise every answer runs on to max_new_tokens."""
    from transformers import AutoTokenizer, GenerationConfig

    data = write_jsonl(tmp_path / "sft.jsonl", RECORDS)
    ft = run_inprocess(tmp_path / "ft", {
        "kind": "finetune", "model": str(base_split), "dataset": str(data), "template": "chat",
        "learning_rate": 3e-3, "max_steps": 60, "per_device_batch": 6, "grad_accum": 1, "warmup_steps": 0})
    assert ft.returncode == 0, ft.stderr[-2000:]
    model_dir = tmp_path / "ft" / "outputs" / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    eos, eot = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    assert GenerationConfig.from_pretrained(model_dir).eos_token_id == [eos, eot]
    assert json.loads((model_dir / "labdeck_training.json").read_text())["stop_token_ids"] == [eos, eot]

    gen = run_inprocess(tmp_path / "gen", {"kind": "generate", "model": str(model_dir), "dataset": str(data),
                                           "max_new_tokens": 40})
    assert gen.returncode == 0, gen.stderr[-2000:]
    rows = gen.records()
    assert sum(r["finished"] for r in rows) >= 5, [r["response"] for r in rows]
    assert all(r["response_tokens"] < 40 for r in rows if r["finished"])
    assert sum(r["response"] == rec["output"] for r, rec in zip(rows, RECORDS, strict=True)) >= 5
    loaded = next(e for e in gen.events if e["type"] == "info" and e["message"] == "generate: model loaded")
    assert loaded["stop_token_ids"] == [eos, eot]


def test_openai_penalties_match_a_hand_computed_example() -> None:
    """logit[t] -= presence * [count > 0] + frequency * count, counted over the generated tokens only."""
    import torch

    from engine.jobs._decoding import apply_penalties, penalty_processor_class

    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    generated = torch.tensor([[2, 2, 4]])  # token 2 twice, token 4 once
    out = apply_penalties(scores, generated, presence=0.1, frequency=0.1)
    assert out.tolist()[0] == pytest.approx([1.0, 2.0, 3.0 - 0.1 - 0.2, 4.0, 5.0 - 0.1 - 0.1])
    out = apply_penalties(scores, generated, presence=0.5, frequency=0.0)
    assert out.tolist()[0] == pytest.approx([1.0, 2.0, 2.5, 4.0, 4.5])
    # the processor skips the prompt: ids [prompt 0 0 | generated 2 2 4]; token 0 is not penalised
    proc = penalty_processor_class()(0.1, 0.1, prompt_len=2)
    got = proc(torch.tensor([[0, 0, 2, 2, 4]]), scores.clone())
    assert got.tolist()[0] == pytest.approx([1.0, 2.0, 2.7, 4.0, 4.8])


def test_a_presence_penalty_changes_greedy_decoding(tiny, prompts: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """A random tiny model repeats tokens under greedy decoding; a large presence penalty forbids any repeat."""
    from transformers import AutoTokenizer

    spec = {"kind": "generate", "model": str(tiny.llama), "dataset": str(prompts), "max_new_tokens": 12,
            "strip_response": False}
    plain = run_inprocess(tmp_path / "plain", spec)
    pen = run_inprocess(tmp_path / "pen", {**spec, "presence_penalty": 2.0, "frequency_penalty": 2.0})
    assert plain.returncode == 0 and pen.returncode == 0, pen.stderr[-2000:]
    tok = AutoTokenizer.from_pretrained(tiny.llama)

    def repeats(rows: list[dict]) -> int:
        n = 0
        for r in rows:
            ids = tok(r["response"], add_special_tokens=False)["input_ids"]
            n += len(ids) - len(set(ids))
        return n

    assert repeats(plain.records()) > 0
    assert repeats(pen.records()) < repeats(plain.records())
    g = pen.records()[0]["generator"]
    assert (g["presence_penalty"], g["frequency_penalty"]) == (2.0, 2.0)


def test_one_generate_job_runs_a_list_of_attacks_and_names_each(tiny, prompts: Path, tmp_path: Path) -> None:  # noqa: ANN001
    single = run_inprocess(tmp_path / "one", {"kind": "generate", "model": str(tiny.llama), "dataset": str(prompts),
                                              "template": "struq", "attack": "ignore", "max_new_tokens": 4})
    both = run_inprocess(tmp_path / "two", {"kind": "generate", "model": str(tiny.llama), "dataset": str(prompts),
                                            "template": "struq", "attack": ["ignore", "completion_real"],
                                            "max_new_tokens": 4})
    assert single.returncode == 0 and both.returncode == 0, both.stderr[-2000:]
    one, two = single.records(), both.records()
    assert [r["attack"] for r in two] == ["ignore"] * len(one) + ["completion_real"] * len(one)
    # the same record under the same attack gets the same prompt and answer as in a job of its own
    assert [(r["id"], r["prompt"], r["response"]) for r in two[: len(one)]] == [
        (r["id"], r["prompt"], r["response"]) for r in one]
    loads = [e for e in both.events if e["type"] == "info" and e["message"] == "generate: model loaded"]
    assert len(loads) == 1
