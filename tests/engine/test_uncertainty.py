"""Calibration pieces (docs/science.md §10): worked examples, correctness labels, estimators in the score job, data prep."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from job_harness import run_inprocess, write_jsonl

# ------------------------------------------------------------------------------------ §10.4 worked example

P_CORRECT = [0.95, 0.85, 0.80, 0.20, 0.40, 0.55]
Y = [1, 1, 0, 0, 1, 1]


def test_section_10_4_test_vector() -> None:
    from engine.jobs._uncertainty import uncertainty_metrics

    m = uncertainty_metrics(P_CORRECT, Y)
    assert m["ece"] == pytest.approx(0.258333, abs=1e-6)  # two-sided, official
    assert m["ece_raw"] == m["ece"]  # no temperature given: the raw confidence
    assert m["ece_one_sided"] == pytest.approx(0.325)
    assert m["auroc"] == pytest.approx(0.75)  # 6 of 8 pairs ordered
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["unc_acc"] == pytest.approx(4 / 6)  # hit = [1, 1, 0, 1, 0, 1]


def test_ece_comes_from_the_scaled_confidence_and_auroc_from_the_raw_one() -> None:
    from engine.jobs._uncertainty import uncertainty_metrics

    flat = [0.5 + (p - 0.5) * 0.1 for p in P_CORRECT]  # a monotone squash: same order, other calibration
    m = uncertainty_metrics(P_CORRECT, Y, p_ts=flat)
    assert m["ece_raw"] == pytest.approx(0.258333, abs=1e-6)
    assert m["ece"] != pytest.approx(m["ece_raw"])
    assert m["auroc"] == pytest.approx(0.75)


def test_official_quirk_drops_conf_one() -> None:
    from engine.jobs._uncertainty import uncertainty_metrics

    m = uncertainty_metrics([1.0, 0.7], [0, 1])
    assert m["ece"] == pytest.approx(0.3)  # the 1.0 is in no bin
    assert m["ece_corrected"] == pytest.approx(0.65)  # (|1 - 0| + |.7 - 1|) / 2


# ------------------------------------------------------------------------------------ §10.1 / §10.2 strings


@pytest.mark.parametrize(("raw", "clean"), [
    ("\n\nParis\nThe capital", "Paris"),
    ("Answer:\nParis", "Answer:Paris"),
    ("Paris\n\n\nRome", "Paris"),
    ("  Paris  ", "  Paris  "),  # only newlines are stripped
    ("", ""),
])
def test_sanitisation(raw: str, clean: str) -> None:
    from engine.jobs._uncertainty import sanitize_answer

    assert sanitize_answer(raw) == clean
    assert sanitize_answer(sanitize_answer(raw)) == clean  # idempotent: generate and scorer may both apply it


def test_query_and_feature_texts() -> None:
    from engine.jobs._uncertainty import qa_text, query_text

    assert query_text("Question: 2+2?\nAnswer:", "4") == (
        "Question: 2+2?\nAnswer: 4\n\nIs the proposed answer correct?\nChoices:\n(i): no\n(ii): yes\nAnswer:")
    assert qa_text("Question: 2+2?\nAnswer:", "4") == "Question: 2+2?\nAnswer: 4"


def test_choice_tokens_are_read_as_the_last_id(tiny) -> None:  # noqa: ANN001
    from transformers import AutoTokenizer

    from engine.jobs._uncertainty import choice_token_ids

    tok = AutoTokenizer.from_pretrained(tiny.llama)
    i, ii = choice_token_ids(tok)
    assert (i, ii) == (tok("i")["input_ids"][-1], tok("ii")["input_ids"][-1]) and i != ii


def test_correctness_rules() -> None:
    from engine.jobs.scorers.correctness import correct_by_rule, judge_says_yes, normalize_answer

    assert correct_by_rule("(b)", "b", "substring") == 1
    assert correct_by_rule("B", "b", "substring") == 0  # case-sensitive, as the official `target in prediction`
    assert normalize_answer("The  Great Depression.") == "great depression"
    assert correct_by_rule("the great depression", "The Great Depression.", "normalized") == 1
    assert correct_by_rule("great depression era", "the Great Depression", "normalized") == 0
    assert judge_says_yes("Yes.") == 1 and judge_says_yes("no") == 0 and judge_says_yes("YES, it is") == 1


# ------------------------------------------------------------------------------------ jobs


def _qa_records(tmp_path: Path) -> Path:
    rows = []
    for i in range(24):
        right = i % 3 != 0
        rows.append({"id": f"q{i}", "instruction": f"Question: what is {i} plus one?\nAnswer:",
                     "response": "\n" + (str(i + 1) if right else "no idea") + "\nmore text", "target": str(i + 1),
                     "subject": ["algebra", "counting"][i % 2]})
    return write_jsonl(tmp_path / "answers.jsonl", rows)


def test_correctness_then_confidence_in_one_job_per_subject(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    data = _qa_records(tmp_path)
    res = run_inprocess(tmp_path / "run", {
        "kind": "score", "records": str(data), "input_field": None, "group_field": "subject",
        "scorers": [{"type": "correctness", "mode": "normalized"},
                    {"type": "confidence", "model": str(tiny.llama), "label_field": "correct"}]})
    assert res.returncode == 0, res.errors()
    out = res.records()
    assert [o["correct"] for o in out] == [int(i % 3 != 0) for i in range(24)]  # sanitised answer vs target
    assert [o["confidence_label"] for o in out] == [o["correct"] for o in out]  # read from the earlier scorer
    assert all(o["confidence_ts"] == o["confidence"] for o in out)  # zero-shot: no temperature
    s = res.summary()
    for name in ("ece", "auroc", "ece/algebra", "auroc/counting", "auroc_group_mean", "correct"):
        assert name in s and math.isfinite(s[name]), name
    assert s["auroc_group_mean"] == pytest.approx((s["auroc/algebra"] + s["auroc/counting"]) / 2)


@pytest.fixture(scope="module")
def probe(tiny, tmp_path_factory) -> Path:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("probe")
    data = _qa_records(tmp)
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for r in rows:
        r["correct"] = int(r["response"].split("\n")[1] == r["target"])
    write_jsonl(data, rows)
    res = run_inprocess(tmp / "train", {
        "kind": "finetune", "method": "calibration", "calibration_style": "probe", "model": str(tiny.llama),
        "dataset": {"path": str(data), "instruction_field": "instruction", "input_field": None, "output_field": "response"},
        "label_field": "correct", "template": "raw", "learning_rate": 3e-3, "max_steps": 6, "per_device_batch": 4,
        "warmup_steps": 0, "validation_fraction": 0.25})
    assert res.returncode == 0, res.errors()
    return tmp / "train" / "outputs" / "model"


def test_a_trained_probe_scores_answers_as_it_was_trained(tiny, probe: Path, tmp_path: Path) -> None:  # noqa: ANN001
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.jobs._uncertainty import build_head

    data = _qa_records(tmp_path)
    res = run_inprocess(tmp_path / "run", {
        "kind": "score", "records": str(data), "input_field": None,
        "scorers": [{"type": "correctness", "mode": "substring"}, {"type": "confidence", "estimator": str(probe)}]})
    assert res.returncode == 0, res.errors()
    info = json.loads((probe / "calibration.json").read_text())
    out = res.records()
    # recompute record 1 by hand: the frozen model's last hidden state of '{c} {p}', the head, softmax / T
    tok = AutoTokenizer.from_pretrained(tiny.llama)
    model = AutoModelForCausalLM.from_pretrained(tiny.llama).eval()
    head = build_head(model.config.hidden_size)
    head.load_state_dict(load_file(probe / "calibration_head.safetensors"))
    ids = tok("Question: what is 1 plus one?\nAnswer: 2", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        z = head(h)
    assert out[1]["confidence"] == pytest.approx(torch.softmax(z, -1)[1].item(), abs=1e-5)
    assert out[1]["confidence_ts"] == pytest.approx(torch.softmax(z / info["temperature"], -1)[1].item(), abs=1e-5)
    ready = next(e for e in res.infos() if e.get("message") == "score: confidence ready")
    assert ready["method"] == "probe" and ready["estimator"]["temperature"] == pytest.approx(info["temperature"])


def test_an_estimator_folder_that_is_not_one_is_one_clear_error(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    data = _qa_records(tmp_path)
    res = run_inprocess(tmp_path / "run", {"kind": "score", "records": str(data), "input_field": None,
                                           "scorers": [{"type": "confidence", "estimator": str(tiny.llama)}]})
    assert res.returncode == 3
    assert "calibration.json" in res.errors()[0]["message"] and "estimator" in res.errors()[0]["message"]


def test_local_judge_labels_and_says_it_is_a_replacement(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    data = _qa_records(tmp_path)
    res = run_inprocess(tmp_path / "run", {"kind": "score", "records": str(data), "input_field": None,
                                           "scorers": [{"type": "correctness", "mode": "judge", "model": str(tiny.qwen2),
                                                        "max_new_tokens": 3}]})
    assert res.returncode == 0, res.errors()
    out = res.records()
    assert all(o["correct"] in (0, 1) and isinstance(o["correct_reply"], str) for o in out)
    summary = json.loads((res.outputs / "summary.json").read_text())["recorded"]["correct"]
    assert "LOCAL" in summary["judge"]["label"] and "PROMPT_ANSWER_KEY_EQUIVALENCY" in summary["prompt_source"]


class _Grader(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Grader.bodies.append(body)
        user = body["messages"][-1]["content"]
        answer = user.split("A student submitted the answer: ")[1].split("\n")[0]
        target = user.split("The correct answer for this problem is: ")[1].split("\n")[0]
        data = json.dumps({"choices": [{"message": {"content": "Yes" if answer == target else "No."}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_endpoint_judge_gets_the_grading_prompt(tmp_path: Path) -> None:
    data = _qa_records(tmp_path)
    server = HTTPServer(("127.0.0.1", 0), _Grader)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Grader.bodies.clear()
    try:
        res = run_inprocess(tmp_path / "run", {"kind": "score", "records": str(data), "input_field": None, "scorers": [
            {"type": "correctness", "mode": "judge", "endpoint": f"http://127.0.0.1:{server.server_port}/v1",
             "endpoint_model": "gpt-3.5-turbo-1106"}]})
    finally:
        server.shutdown()
    assert res.returncode == 0, res.errors()
    assert [o["correct"] for o in res.records()] == [int(i % 3 != 0) for i in range(24)]
    # requests go out concurrently: take record 0's by its question, not by arrival order
    first = next(b for b in _Grader.bodies if "what is 0 plus one?" in b["messages"][1]["content"])
    # calibration-tuning's request: no temperature, no max_tokens (the API defaults)
    assert first["model"] == "gpt-3.5-turbo-1106" and "temperature" not in first and "max_tokens" not in first
    assert first["messages"][0]["content"] == "You are an automated grading assistant helping a teacher grade student answers."
    # PROMPT_ANSWER_KEY_EQUIVALENCY of calibration-tuning's llm/datasets/llm_utils_oe.py (commit 02379f88), byte for byte
    assert first["messages"][1]["content"] == (
        "The problem is: Question: what is 0 plus one?\nAnswer:\n\n The correct answer for this problem is: 1\n "
        "A student submitted the answer: no idea\n "
        "The student's answer must be correct and specific but not overcomplete (for example, if they provide two "
        "different answers, they did not get the question right). However, small differences in formatting should "
        "not be penalized (for example, 'New York City' is equivalent to 'NYC'). Did the student provide an "
        "equivalent answer to the ground truth? Please answer yes or no without any explanation: ")


def test_generate_sanitises_and_keeps_the_raw_answer(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    data = write_jsonl(tmp_path / "q.jsonl", [{"instruction": "Question: name a colour.\nAnswer:"}] * 2)
    res = run_inprocess(tmp_path / "run", {"kind": "generate", "model": str(tiny.llama), "dataset": str(data),
                                           "template": "raw", "max_new_tokens": 24, "sanitize": True,
                                           "strip_response": False})
    assert res.returncode == 0, res.errors()
    from engine.jobs._uncertainty import sanitize_answer

    for row in res.records():
        assert row["response"] == sanitize_answer(row["response_raw"]) and "\n" not in row["response"]


# ------------------------------------------------------------------------------------ data preparation


def test_mmlu_oe_prompt_format() -> None:
    """Byte for byte as calibration-tuning builds a 5-shot MMLU item (llm/datasets/hf/mmlu.py: `format_sample`,
    `format_sample_prompt`, `get_mmlu`; llm/datasets/llm_utils.py: `LMText.__str__`): the label
    `" ".join(task.split("_")).capitalize()`, ["header\n", shot + "\n" ..., "Now, answer the next question.\n\n"]
    joined with "\n" (a blank line after the header and between shots), then context + "\nAnswer:"."""
    from engine.data.calibration import mmlu_record

    shots = [{"question": "What is 1+1?", "choices": ["3", "2"], "answer": 1},
             {"question": "What is 3+3?", "choices": ["6", "9"], "answer": 0}]
    row = {"question": "What is 2+2?", "choices": ["4", "5"], "answer": 0}
    r = mmlu_record(row, "elementary_mathematics", shots, "oe", "x")
    assert r["instruction"] == ("The following are questions (with answers) about Elementary mathematics.\n\n"
                                "Question: What is 1+1?\nAnswer: 2\n\n"
                                "Question: What is 3+3?\nAnswer: 6\n\n"
                                "Now, answer the next question.\n\n"
                                "Question: What is 2+2?\nAnswer:")
    assert r["question"] == "Question: What is 2+2?\nAnswer:"  # the item without its shots (the estimator's input)
    assert r["target"] == "4" and r["subject"] == "elementary_mathematics"
    mc = mmlu_record(row, "high_school_us_history", shots[:1], "mc", "y")
    assert mc["instruction"] == ("The following are multiple-choice questions (with answers) about High school us "
                                 "history.\n\nQuestion:\nWhat is 1+1?\n\nChoices:\n  (a): 3\n  (b): 2\nAnswer: b\n\n"
                                 "Now, answer the next question.\n\n"
                                 "Question:\nWhat is 2+2?\n\nChoices:\n  (a): 4\n  (b): 5\nAnswer:")
    assert mc["target"] == "a"


def test_shots_are_drawn_with_seed_plus_index() -> None:
    from engine.data.calibration import mmlu_records, sample_shots

    dev = [{"question": f"d{i}", "choices": ["x"], "answer": 0} for i in range(10)]
    assert sample_shots(dev, 5, 0, 3) == sample_shots(dev, 5, 3, 0) != sample_shots(dev, 5, 0, 4)
    import numpy as np  # calibration-tuning: np.random.default_rng(seed=seed + idx).permutation(len(dev))[:k]

    assert sample_shots(dev, 5, 0, 3) == [dev[i] for i in np.random.default_rng(seed=3).permutation(10)[:5]]
    subjects = {"virology": {"dev": dev, "test": [{"question": "q", "choices": ["a", "b"], "answer": 1}] * 3}}
    rows = mmlu_records(subjects, "test", 5, 0, "oe")
    assert len(rows) == 3 and all(r["kshot"] == 5 and r["instruction"].endswith("Question: q\nAnswer:") for r in rows)


def test_training_pool_is_uniform_over_sources_with_a_validation_tail() -> None:
    from collections import Counter

    from engine.data.calibration import uniform_pool

    sources = {"a": [(f"qa{i}", f"A{i}") for i in range(50)], "b": [(f"qb{i}", f"B{i}") for i in range(50)],
               "c": [(f"qc{i}", f"C{i}") for i in range(50)]}
    pool = uniform_pool(sources, 30, 6, seed=1)
    assert Counter(r["dataset"] for r in pool) == {"a": 12, "b": 12, "c": 12}
    assert [r["split"] for r in pool] == ["train"] * 30 + ["validation"] * 6
    assert len({r["id"] for r in pool}) == 36
    for r in pool:  # 1-shot: one example of the same dataset, never the item itself
        assert r["instruction"].count("Question: ") == 2 and r["instruction"].endswith("\nAnswer:")
    assert uniform_pool(sources, 30, 6, seed=1) == pool
    with pytest.raises(ValueError, match="usable rows"):
        uniform_pool({"a": sources["a"][:5]}, 10, 0, seed=0)


def test_shipped_tiny_sets_have_the_recipe_fields() -> None:
    root = Path(__file__).parents[2] / "engine" / "data" / "calibration"
    for name, extra in (("tiny_pool.jsonl", "dataset"), ("tiny_mmlu.jsonl", "subject")):
        rows = [json.loads(x) for x in (root / name).read_text().splitlines()]
        assert rows and len({r["id"] for r in rows}) == len(rows)
        for r in rows:
            assert r["instruction"].endswith("\nAnswer:") and r["target"] and r[extra]
