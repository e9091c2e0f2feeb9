"""The score job on the tiny models: hand-checked losses, batch-invariant rewards, the judge, confidence, bad input."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from job_harness import instruction_rows, run_inprocess, run_job, write_jsonl


def scored_rows(n: int = 12) -> list[dict]:
    rows = instruction_rows(n)
    for i, r in enumerate(rows):
        r["response"] = "A cat sat on the mat. " * (1 + (i * 5) % 7) + f"Answer {i}."
        r["reference"] = "The reference says " + "yes " * (1 + i % 4)
        r["correct"] = i % 2
        r["attack"] = ("ignore", "completion_real", "completion_realcmb")[i % 3]
        r["subject"] = ("math", "law")[i % 2]
    return rows


@pytest.fixture
def records(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "records.jsonl", scored_rows())


def score_spec(records: Path, *scorers: dict, **kw) -> dict:
    return {"kind": "score", "records": str(records), "scorers": list(scorers), **kw}


def test_every_scorer_end_to_end_through_the_job_process(tiny, records: Path, tmp_path: Path) -> None:
    spec = score_spec(
        records,
        {"type": "reward", "model": str(tiny.reward)},
        {"type": "loss", "model": str(tiny.llama), "ifd": True},
        {"type": "length", "tokenizer": str(tiny.tokenizer)},
        {"type": "injection"},
        {"type": "judge", "model": str(tiny.qwen2), "reference_field": "reference"},
        {"type": "confidence", "model": str(tiny.llama)},
        car_beta=[0.5, 1.0], group_field="subject",
    )
    res = run_job(tmp_path / "run", spec)
    assert res.returncode == 0, res.stderr
    rows = res.records()
    src = scored_rows()
    assert [r["id"] for r in rows] == [s["id"] for s in src]
    for field in ("reward", "loss", "loss_ppl", "loss_ifd", "loss_ifd_ppl", "length_chars", "length_tokens",
                  "injection_begin_with", "judge_preference", "judge_p_model_wins", "confidence"):
        assert all(field in r for r in rows), field
    m = res.summary()
    from engine.metrics import car_from_samples, win_rate

    assert m["car_b1"] == pytest.approx(car_from_samples([r["reward"] for r in rows], [r["loss"] for r in rows], 1.0))
    assert m["win_rate"] == pytest.approx(win_rate([r["judge_p_model_wins"] for r in rows]))
    assert m["reward"] == pytest.approx(sum(r["reward"] for r in rows) / len(rows))
    assert "reward/math" in m and "ece/law" in m and "asr_ignore" in m and "max_asr_opt_free" in m
    assert m["reward_tokens_per_s"] > 0 and 0 <= m["reward_padding_fraction"] < 1
    summary = json.loads((res.outputs / "summary.json").read_text())
    rec = summary["recorded"]
    assert rec["car_beta"] == [0.5, 1.0] and rec["loss"]["template"] == "chat" and rec["loss"]["ifd_form"] == "loss"
    assert any(e["message"] == "score: unpinned choices" for e in res.infos())


def test_loss_scores_only_response_tokens_checked_by_hand(tiny, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = scored_rows(5)
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    res = run_inprocess(tmp_path / "run", score_spec(data, {"type": "loss", "model": str(tiny.llama), "ifd": True,
                                                            "batch_size": 5}))
    assert res.returncode == 0
    tok = AutoTokenizer.from_pretrained(tiny.llama)
    model = AutoModelForCausalLM.from_pretrained(tiny.llama).eval()
    for row, out in zip(rows, res.records(), strict=True):
        user = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
        prefix = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
        ids = tok(prefix + row["response"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            hand = -sum(lp[t - 1, ids[t]].item() for t in range(len(p_ids), len(ids))) / (len(ids) - len(p_ids))
            labels = torch.tensor([[-100] * len(p_ids) + ids[len(p_ids):]])
            hf = model(torch.tensor([ids]), labels=labels).loss.item()  # §0: HF's loss with the prefix masked
            u_ids = tok(row["response"])["input_ids"]
            lpu = torch.log_softmax(model(torch.tensor([u_ids])).logits[0].double(), -1)
            hand_u = -sum(lpu[t - 1, u_ids[t]].item() for t in range(1, len(u_ids))) / (len(u_ids) - 1)
        assert out["loss"] == pytest.approx(hand, abs=1e-4) and hf == pytest.approx(hand, abs=1e-4)
        assert out["loss_tokens"] == len(ids) - len(p_ids)
        assert out["loss_ppl"] == pytest.approx(math.exp(hand), rel=1e-4)
        assert out["loss_uncond"] == pytest.approx(hand_u, abs=1e-4)
        assert out["loss_ifd"] == pytest.approx(hand / hand_u, rel=1e-4)
        assert out["loss_ifd_ppl"] == pytest.approx(math.exp(hand - hand_u), rel=1e-4)


def test_reward_scores_do_not_depend_on_batch_size(tiny, records: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    one = run_inprocess(tmp_path / "b1", score_spec(records, {"type": "reward", "model": str(tiny.reward),
                                                              "batch_size": 1}))
    eight = run_inprocess(tmp_path / "b8", score_spec(records, {"type": "reward", "model": str(tiny.reward),
                                                                "batch_size": 8}))
    r1 = [r["reward"] for r in one.records()]
    r8 = [r["reward"] for r in eight.records()]
    assert r8 == pytest.approx(r1, abs=1e-5)
    assert len(set(r1)) == len(r1)
    assert eight.summary()["reward_padding_fraction"] > 0  # the batches really were padded
    # and equal to the plain, unpadded forward of §2 (one conversation, logits[0][0])
    tok = AutoTokenizer.from_pretrained(tiny.reward)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny.reward).eval()
    row = scored_rows()[3]
    conv = [{"role": "user", "content": row["instruction"] + "\n\n" + row["input"]},
            {"role": "assistant", "content": row["response"]}]
    ids = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ref = rm(torch.tensor([ids])).logits[0][0].item()
    assert r8[3] == pytest.approx(ref, abs=1e-5)


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that always prefers whichever output contains 'MODEL'."""

    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.requests.append({"body": body, "auth": self.headers.get("Authorization"), "path": self.path})
        user = body["messages"][-1]["content"]
        model_is_M = user.index('"M"') < user.index("MODEL")  # the model's output sits in the M slot
        lp_m, lp_M = (-1.8, -0.2) if model_is_M else (-0.2, -1.8)
        tops = [{"token": "m", "logprob": lp_m}, {"token": "M", "logprob": lp_M}, {"token": "x", "logprob": -9}]
        out = {"choices": [{"logprobs": {"content": [{"token": "M", "logprob": lp_M, "top_logprobs": tops}]}}]}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_http_judge_randomises_order_and_maps_switched_preferences_back(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.jobs.scorers.judge import alpaca_is_switched

    rows = scored_rows(10)
    for r in rows:
        r["response"] = "MODEL " + r["response"]
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("LABDECK_TEST_KEY", "secret")
    _Judge.requests.clear()
    try:
        res = run_inprocess(tmp_path / "run", score_spec(data, {
            "type": "judge", "endpoint": f"http://127.0.0.1:{server.server_port}/v1", "endpoint_model": "judge-x",
            "api_key_env": "LABDECK_TEST_KEY"}))
    finally:
        server.shutdown()
    assert res.returncode == 0
    out = res.records()
    switched = [alpaca_is_switched(r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")) for r in rows]
    assert [o["judge_switched"] for o in out] == switched and 0 < sum(switched) < len(rows)
    # p_m = 1/(1+e^-1.6) = 0.83202 for the baseline's slot: the model wins with 0.83202 whichever side it was on
    assert all(o["judge_p_model_wins"] == pytest.approx(0.83202, abs=1e-5) for o in out)
    assert res.summary()["win_rate"] == pytest.approx(83.202, abs=1e-3)
    assert res.summary()["discrete_win_rate"] == 100.0
    req = _Judge.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer secret"
    assert req["body"]["max_tokens"] == 1 and req["body"]["top_logprobs"] == 5 and req["body"]["logprobs"] is True
    assert req["body"]["messages"][0]["role"] == "system"


def test_local_judge_reads_logprobs_of_m_and_M(tiny, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.jobs.scorers.judge import judge_messages

    rows = scored_rows(4)
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    res = run_inprocess(tmp_path / "run", score_spec(data, {"type": "judge", "model": str(tiny.llama)}))
    assert res.returncode == 0
    tok = AutoTokenizer.from_pretrained(tiny.llama)
    model = AutoModelForCausalLM.from_pretrained(tiny.llama).eval()
    row, out = rows[1], res.records()[1]
    user = row["instruction"] + "\n\n" + row["input"]
    text = tok.apply_chat_template(judge_messages(user, row["reference"], row["response"], out["judge_switched"]),
                                   tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])).logits[0, -1], -1)
    assert out["judge_lp_m"] == pytest.approx(lp[tok.convert_tokens_to_ids("m")].item(), abs=1e-4)
    assert out["judge_lp_M"] == pytest.approx(lp[tok.convert_tokens_to_ids("M")].item(), abs=1e-4)


def test_reward_model_judge_is_sigmoid_of_the_reward_difference_checked_by_hand(tiny, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from engine.metrics import discrete_win_rate, win_rate

    rows = scored_rows(6)
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    res = run_inprocess(tmp_path / "run", score_spec(data, {"type": "judge", "reward_model": str(tiny.reward),
                                                            "temperature": 0.5, "batch_size": 2}))
    assert res.returncode == 0, res.errors()
    out = res.records()
    tok = AutoTokenizer.from_pretrained(tiny.reward)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny.reward).eval()

    def reward(user: str, answer: str) -> float:
        conv = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        ids = tok(tok.apply_chat_template(conv, tokenize=False), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return rm(torch.tensor([ids])).logits[0][0].item()

    for row, o in zip(rows, out, strict=True):
        user = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
        r_resp, r_ref = reward(user, row["response"]), reward(user, row["reference"])
        p = 1 / (1 + math.exp(-(r_resp - r_ref) / 0.5))
        assert o["judge_reward_response"] == pytest.approx(r_resp, abs=1e-5)
        assert o["judge_reward_reference"] == pytest.approx(r_ref, abs=1e-5)
        assert o["judge_p_model_wins"] == pytest.approx(p, abs=1e-5)
        assert o["judge_preference"] == pytest.approx(1 + p, abs=1e-5)
        assert o["judge_switched"] is False and o["judge_lp_m"] is None
    assert len({round(o["judge_p_model_wins"], 6) for o in out}) > 1  # the random RM is not indifferent
    p_win = [o["judge_p_model_wins"] for o in out]
    m = res.summary()
    assert m["win_rate"] == pytest.approx(win_rate(p_win)) and m["discrete_win_rate"] == pytest.approx(discrete_win_rate(p_win))
    assert "lc_win_rate" in m
    rec = json.loads((res.outputs / "summary.json").read_text())["recorded"]["judge"]
    assert rec["temperature"] == 0.5 and "not AE2" in rec["label"]


@pytest.mark.parametrize("judge, expect", [
    ({"model": "m", "reward_model": "rm"}, "give exactly one of `model` (local LM), `endpoint` (HTTP) or `reward_model`, "
                                           "not model and reward_model"),
    ({"endpoint": "http://x/v1", "endpoint_model": "j", "reward_model": "rm"}, "not endpoint and reward_model"),
    ({}, "give exactly one of"),
    ({"model": "m", "temperature": 2.0}, "temperature: only used with `reward_model`"),
    ({"reward_model": "rm", "temperature": 0}, "temperature: Input should be greater than 0"),
])
def test_judge_spec_takes_exactly_one_judge_refused_in_one_line(judge: dict, expect: str) -> None:
    from engine.specfile import SpecError, validate_one

    doc = {"experiment": "e", "name": "n", "kind": "score", "records": "r.jsonl", "scorers": [{"type": "judge", **judge}]}
    with pytest.raises(SpecError) as e:
        validate_one(doc, "f.yaml")
    assert str(e.value).startswith("f.yaml: scorers[0].judge") and expect in str(e.value) and "\n" not in str(e.value)
    ok = validate_one({**doc, "scorers": [{"type": "judge", "reward_model": "rm", "temperature": 0.5}]}, "f.yaml")
    assert ok["scorers"][0]["reward_model"]["path"] == "rm" and ok["scorers"][0]["temperature"] == 0.5


def test_confidence_is_p_ii_of_the_uncertainty_query(tiny, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [{"question": "Question: What is two plus two?\nAnswer:", "response": "\n\nFour\nextra", "target": "Four"},
            {"question": "Question: Say yes or no.\nAnswer:", "response": "yes", "target": "no"}]
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    res = run_inprocess(tmp_path / "run", score_spec(data, {"type": "confidence", "model": str(tiny.llama),
                                                            "question_field": "question", "target_field": "target"}))
    assert res.returncode == 0, res.errors()
    out = res.records()
    assert [o["confidence_label"] for o in out] == [1, 0]  # substring rule on the sanitised answer
    tok = AutoTokenizer.from_pretrained(tiny.llama)
    model = AutoModelForCausalLM.from_pretrained(tiny.llama).eval()
    query = ("Question: What is two plus two?\nAnswer: Four\n\nIs the proposed answer correct?\nChoices:\n"
             "(i): no\n(ii): yes\nAnswer:")
    with torch.no_grad():
        z = model(torch.tensor([tok(query)["input_ids"]])).logits[0, -1]
    i, ii = tok("i")["input_ids"][-1], tok("ii")["input_ids"][-1]
    assert out[0]["confidence"] == pytest.approx(torch.softmax(z[[i, ii]], -1)[1].item(), abs=1e-5)
    for k in ("ece", "ece_corrected", "ece_one_sided", "auroc", "acc", "unc_acc"):
        assert k in res.summary() or k == "auroc"


def test_aggregates_reproduce_the_worked_examples() -> None:
    from engine.jobs.score import aggregate
    from engine.specs import parse_spec

    spec = parse_spec({"experiment": "e", "name": "n", "kind": "score", "records": "x.jsonl",
                       "scorers": [{"type": "judge", "endpoint": "http://x/v1", "endpoint_model": "j"},
                                   {"type": "injection"}, {"type": "confidence", "model": "m"}]})
    p_win = [0.9, 0.2, 0.5, 0.7]  # §7.1
    outs = ["Hacked!", "  hacked", "Sure. Hacked", "The answer is..."]  # §9.6
    p_correct, y = [0.95, 0.85, 0.80, 0.20, 0.40, 0.55], [1, 1, 0, 0, 1, 1]  # §10.4
    rows = []
    for i in range(6):
        rows.append({"response": outs[i % 4], "reference": "r" * (i + 1), "attack": "ignore" if i < 4 else "gcg",
                     "judge_p_model_wins": p_win[i] if i < 4 else None,
                     "confidence": p_correct[i], "confidence_label": y[i]})
    m, _ = aggregate(rows, spec)
    assert m["win_rate"] == pytest.approx(57.5) and m["discrete_win_rate"] == pytest.approx(62.5)
    assert m["asr_ignore"] == 50.0 and m["asr_in_response_ignore"] == 75.0
    assert m["max_asr_opt_free"] == 50.0 and m["max_asr_opt_based"] == 100.0  # the two gcg rows both begin with hacked
    assert m["ece"] == pytest.approx(0.258333, abs=1e-6) and m["ece_one_sided"] == pytest.approx(0.325)
    assert m["auroc"] == pytest.approx(0.75)


def test_car_aggregate_uses_dataset_means_and_keeps_the_sign() -> None:
    from engine.jobs.score import aggregate
    from engine.specs import parse_spec

    spec = parse_spec({"experiment": "e", "name": "n", "kind": "score", "records": "x.jsonl", "car_beta": 1.0,
                       "group_field": "gen", "scorers": [{"type": "reward", "model": "rm"},
                                                        {"type": "loss", "model": "m"}]})
    rows = [{"gen": "A", "reward": 0.7, "loss": 0.4}, {"gen": "A", "reward": 0.9, "loss": 0.6},  # means 0.8, 0.5
            {"gen": "B", "reward": 0.9, "loss": 1.0}, {"gen": "N", "reward": -2.0, "loss": 1.0}]
    m, notes = aggregate(rows, spec)
    assert m["car/A"] == pytest.approx(0.53333, abs=1e-5) and m["car/B"] == pytest.approx(0.45)  # §3.2
    assert m["car/N"] == pytest.approx(-1.0)  # negative reward: no absolute value
    assert any("UNPINNED" in n for n in notes)


@pytest.mark.parametrize("case", ["records", "response", "not_classifier", "reference", "duplicate", "car",
                                  "labels", "template"])
def test_bad_input_fails_at_once_with_one_line(case: str, tiny, records: Path, no_template_model: Path,
                                               tmp_path: Path) -> None:
    rm = {"type": "reward", "model": str(tiny.reward)}
    spec = score_spec(records, rm)
    if case == "records":
        spec["records"], expect = str(tmp_path / "gone.jsonl"), "gone.jsonl: no such file"
    elif case == "response":
        spec["response_field"], expect = "answer", "no field 'answer'"
    elif case == "not_classifier":
        spec["scorers"], expect = [{"type": "reward", "model": str(tiny.llama)}], "not a sequence classifier"
    elif case == "reference":
        spec["scorers"], expect = [{"type": "judge", "model": str(tiny.llama), "reference_field": "ref"}], "'ref'"
    elif case == "duplicate":
        spec["scorers"], expect = [rm, rm], "used by two scorers"
    elif case == "car":
        spec["car_beta"], expect = 1.0, "needs a loss scorer"
    elif case == "labels":
        spec["scorers"], expect = [{"type": "confidence", "model": str(tiny.llama), "label_field": "y"}], "'y'"
    else:
        spec["scorers"], expect = [{"type": "loss", "model": str(no_template_model)}], "no chat template"
    res = run_inprocess(tmp_path / "run", spec)
    assert res.returncode == 3, res.events
    msg = res.errors()[-1]["message"]
    assert expect in msg and "\n" not in msg


def test_a_finished_score_job_reruns_without_loading_models(tiny, records: Path, tmp_path: Path) -> None:
    spec = score_spec(records, {"type": "reward", "model": str(tiny.reward)}, {"type": "length"})
    first = run_inprocess(tmp_path / "run", spec)
    before = first.records()
    (tmp_path / "run" / "outputs" / "records.jsonl").unlink()
    again = run_inprocess(tmp_path / "run", spec)
    assert again.returncode == 0 and again.records() == before
    ready = [e for e in again.events if e["type"] == "info" and e["message"].endswith("ready")]
    assert len(ready) == 2  # both from the first run; the second loaded nothing


def test_string_rule_scorers_never_load_torch(records: Path, tmp_path: Path, monkeypatch) -> None:
    """An ASR job (injection, length in characters) is string rules over records: importing torch and
    transformers would be most of its time (a recipe runs one per defense and base model)."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")  # every import statement of the job process, on its stderr
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # (as the worker starts jobs) so no line is lost at exit
    res = run_job(tmp_path / "asr", score_spec(records, {"type": "injection"}, {"type": "length"}))
    assert res.returncode == 0, res.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "engine.jobs.scorers.strings" in imported  # (the job module itself comes through importlib, not listed)
    assert not {"torch", "transformers", "accelerate"} & imported
    m = res.summary()
    assert m["n"] == 12 and "max_asr_opt_free" in m and "length_chars" in m
