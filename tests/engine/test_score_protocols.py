"""The papers' judging protocols in the score job: AlpacaEval 2's annotator prompt and its baseline record,
Arena-Hard v0.1's two games and verdict scale, the teacher metrics carried over to a pair's job, AP, and
every recorded detail surviving a resume."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from job_harness import run_inprocess, write_jsonl
from test_score import score_spec, scored_rows

FIXTURES = Path(__file__).parent / "fixtures"
BASELINE = {"model": "gpt4_1106_preview", "dataset": "tatsu-lab/alpaca_eval", "config": "alpaca_eval_gpt4_baseline",
            "field": "reference"}


def test_alpaca_eval_judge_messages_are_alpaca_evals_byte_for_byte() -> None:
    """Fixture: alpaca_eval 0.6.6's own rendering of its weighted_alpaca_eval_gpt4_turbo prompt for one record
    (made with alpaca_eval.utils.make_prompts + prompt_to_chatml; see the fixture's `source`)."""
    from engine.jobs.scorers.judge import judge_messages

    fixture = json.loads((FIXTURES / "alpaca_eval_clf_messages.json").read_text())
    r = fixture["record"]
    assert judge_messages(r["instruction"], r["output_1"], r["output_2"], switched=False) == fixture["messages"]
    assert judge_messages(r["instruction"], r["output_2"], r["output_1"], switched=True) == fixture["messages"]


def test_arena_hard_prompt_is_arena_hards() -> None:
    """Fixtures: arena-hard-auto v0.1's config/judge_config.yaml `system_prompt` and `prompt_template` (judge
    gpt-4-1106-preview, baseline gpt-4-0314). GitHub is not reachable from here: the text was taken from verbatim
    copies of that file in public evaluation code, which agree with each other on every byte."""
    from engine.jobs.scorers.arena_hard import ARENA_HARD_SYSTEM, ARENA_HARD_USER, game_messages

    assert ARENA_HARD_SYSTEM == (FIXTURES / "arena_hard_v0.1_judge_system_prompt.txt").read_text()
    assert ARENA_HARD_USER == (FIXTURES / "arena_hard_v0.1_judge_prompt_template.txt").read_text()
    g0, g1 = game_messages("Q?", "BASE", "MINE", 0), game_messages("Q?", "BASE", "MINE", 1)
    assert g0[1]["content"] == ("<|User Prompt|>\nQ?\n\n<|The Start of Assistant A's Answer|>\nBASE\n<|The End of "
                                "Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\nMINE\n<|The End of "
                                "Assistant B's Answer|>")
    assert "\nMINE\n<|The End of Assistant A" in g1[1]["content"]


class _PositionBiasedJudge(BaseHTTPRequestHandler):
    """Prefers assistant A slightly, whatever it says; for a question containing 'tie' it calls a tie, for
    'garble' it gives no verdict."""

    requests: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _PositionBiasedJudge.requests.append(body)
        user = body["messages"][-1]["content"]
        text = "My answer... My final verdict is: " + (
            "[[A=B]]" if "tie" in user else "no idea" if "garble" in user else "Assistant A is better: [[A>B]]")
        data = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


def test_arena_hard_plays_two_games_and_counts_ties_as_half(tmp_path: Path) -> None:
    """A judge that always prefers A: game 0 (A = baseline) is a loss, game 1 (A = model) a win, so a pure position
    bias gives 50%; a tie counts half in both games; a judgment without a verdict is dropped, not guessed."""
    rows = [{"instruction": q, "response": f"mine {i}", "baseline": f"base {i}"}
            for i, q in enumerate(["Q one", "Q two", "Q tie", "Q garble"])]
    data = write_jsonl(tmp_path / "ah.jsonl", rows)
    server = HTTPServer(("127.0.0.1", 0), _PositionBiasedJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _PositionBiasedJudge.requests.clear()
    try:
        res = run_inprocess(tmp_path / "run", score_spec(data, {
            "type": "arena_hard", "endpoint": f"http://127.0.0.1:{server.server_port}/v1", "endpoint_model": "judge-x",
            "baseline": {"model": "gpt-4-0314", "field": "baseline"}, "max_concurrency": 1}, input_field=None))
    finally:
        server.shutdown()
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.records()
    assert [(r["arena_hard_verdict_0"], r["arena_hard_verdict_1"]) for r in out] == [
        ("A>B", "A>B"), ("A>B", "A>B"), ("A=B", "A=B"), (None, None)]
    m = res.summary()
    # battles: Q1 [0, 1], Q2 [0, 1], tie [0.5, 0.5] -> 3 / 6
    assert m["arena_hard_win_rate"] == pytest.approx(50.0) and m["arena_hard_no_verdict"] == 2
    req = _PositionBiasedJudge.requests
    assert len(req) == 8 and {r["temperature"] for r in req} == {0.0} and {r["max_tokens"] for r in req} == {4096}
    game0 = req[0]["messages"][1]["content"]
    assert game0.index("base 0") < game0.index("mine 0")  # game 0: the baseline is assistant A
    summary = json.loads((tmp_path / "run" / "outputs" / "summary.json").read_text())
    assert summary["recorded"]["baselines"]["arena_hard"]["model"] == "gpt-4-0314"


def test_a_local_arena_hard_judge_ranks_the_five_verdicts(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    rows = [{"instruction": f"Question {i}?", "response": f"Answer {i}.", "baseline": "A baseline answer."}
            for i in range(3)]
    data = write_jsonl(tmp_path / "ah.jsonl", rows)
    res = run_inprocess(tmp_path / "run", score_spec(data, {"type": "arena_hard", "model": str(tiny.llama)},
                                                     input_field=None))
    assert res.returncode == 0, res.stderr[-2000:]
    from engine.jobs.scorers.arena_hard import VERDICTS

    assert all(r[f"arena_hard_verdict_{g}"] in VERDICTS for r in res.records() for g in (0, 1))
    assert 0 <= res.summary()["arena_hard_win_rate"] <= 100


def test_judge_baseline_and_every_detail_survive_a_resume(tiny, tmp_path: Path) -> None:  # noqa: ANN001
    """The summary's recorded details (baseline, order key, judge, counters) are the same when a second attempt
    finds every record already scored and loads no model."""
    data = write_jsonl(tmp_path / "r.jsonl", scored_rows(6))
    spec = score_spec(data, {"type": "judge", "model": str(tiny.llama), "reference_field": "reference",
                             "baseline": BASELINE, "max_length": 64}, {"type": "length"})
    first = run_inprocess(tmp_path / "run", spec)
    assert first.returncode == 0, first.stderr[-2000:]
    path = tmp_path / "run" / "outputs" / "summary.json"
    before = json.loads(path.read_text())
    judge = before["recorded"]["judge"]
    assert judge["baseline"] == BASELINE and before["recorded"]["baselines"]["judge"] == BASELINE
    assert judge["order_key"] == "is_switched_outputs + instruction + 0"
    assert judge["too_long"] == 6  # max_length 64: every judge prompt refused, counted
    path.unlink()
    (tmp_path / "run" / "outputs" / "records.jsonl").unlink()
    again = run_inprocess(tmp_path / "run", spec)
    assert again.returncode == 0
    ready = [e for e in again.events if e["type"] == "info" and e["message"].endswith("ready")]
    assert len(ready) == 2  # both from the first attempt (the events file is appended): the second loaded nothing
    assert json.loads(path.read_text())["recorded"] == before["recorded"]


def test_carried_fields_are_reported_without_a_model_pass(tmp_path: Path) -> None:
    rows = [{"instruction": "q", "response": "r", "reward_rm3": v, "gpt2_ifd": 0.5 + v, "loss": 1.0} for v in (1.0, 3.0)]
    data = write_jsonl(tmp_path / "r.jsonl", rows)
    res = run_inprocess(tmp_path / "run", score_spec(data, {"type": "length"}, carry=["reward_rm3", "gpt2_ifd"],
                                                     car_beta=1.0, car_reward_field="reward_rm3", car_loss_field="loss"))
    assert res.returncode == 0, res.stderr[-2000:]
    m = res.summary()
    assert (m["reward_rm3"], m["gpt2_ifd"], m["car"]) == (2.0, 2.5, pytest.approx(2.0 / (1 + 1.0)))
    bad = run_inprocess(tmp_path / "bad", score_spec(data, {"type": "length"}, carry=["reward_rm1"]))
    assert bad.returncode == 3 and "carry[reward_rm1]" in json.dumps(bad.events)


def test_average_performance_is_the_mean_of_lc_and_arena_hard(tmp_path: Path) -> None:
    """§4.1: AP = (AE2 LC + AH WR) / 2, e.g. Table 2's Gemma-2-9b-it row (16.09 + 13.7) / 2 = 14.895."""
    from engine.jobs.average_performance import main

    ae2, ah = tmp_path / "ae2.json", tmp_path / "ah.json"
    ae2.write_text(json.dumps({"metrics": {"lc_win_rate": 16.09, "win_rate": 13.70},
                               "recorded": {"baselines": {"judge": BASELINE}}}))
    ah.write_text(json.dumps({"metrics": {"arena_hard_win_rate": 13.7}}))
    assert main([str(ae2), str(ah), str(tmp_path / "out")]) == 0
    out = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert out["metrics"]["average_performance"] == pytest.approx(14.895)
    assert out["baselines"]["ae2"]["judge"]["config"] == "alpaca_eval_gpt4_baseline"
    ah.write_text(json.dumps({"metrics": {"arena_hard_win_rate": None}}))
    assert main([str(ae2), str(ah), str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2").exists()
