"""The judge, correctness and Arena-Hard scorers through the concurrent client: same scores as one at a time, resumable."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "engine"))

from job_harness import run_inprocess, write_jsonl  # noqa: E402

from engine.fake_endpoint import FakeEndpoint  # noqa: E402

N = 24


def _rows() -> list[dict]:
    return [{"instruction": f"Question {i}: what is {i} plus {i}?", "input": "", "response": f"It is {2 * i}.",
             "reference": f"{2 * i}", "answer": str(2 * i)} for i in range(N)]


def _judge(url: str, concurrency: int) -> dict:
    return {"type": "judge", "endpoint": url, "endpoint_model": "judge-x", "max_concurrency": concurrency}


def _correct(url: str, concurrency: int) -> dict:
    return {"type": "correctness", "mode": "judge", "target_field": "answer", "endpoint": url,
            "endpoint_model": "grader", "max_concurrency": concurrency}


def _arena_hard(url: str, concurrency: int) -> dict:
    return {"type": "arena_hard", "endpoint": url, "endpoint_model": "judge-x", "reference_field": "reference",
            "max_concurrency": concurrency}


@pytest.mark.parametrize("make", [_judge, _correct, _arena_hard], ids=["judge", "correctness", "arena_hard"])
def test_concurrent_scores_equal_sequential_ones_despite_429s(tmp_path: Path, make) -> None:  # noqa: ANN001
    data = write_jsonl(tmp_path / "r.jsonl", _rows())
    out = {}
    with FakeEndpoint(latency_s=0.05, rate_limit_every=5, retry_after="0.05") as ep:
        for c in (1, 8):
            ep.max_in_flight = 0
            res = run_inprocess(tmp_path / f"run{c}", {"kind": "score", "records": str(data), "scorers": [make(ep.url, c)]})
            assert res.returncode == 0, res.events[-3:]
            out[c] = res.records()
            assert ep.max_in_flight <= c and (c == 1 or ep.max_in_flight > 1)  # the limit holds; requests overlap
        assert ep.refused > 0
    assert out[1] == out[8] and len(out[8]) == N
    if make is _arena_hard:  # the verdicts were read from the judgments, both games of every record
        assert all(r["arena_hard_verdict_0"] and r["arena_hard_verdict_1"] for r in out[8])


def test_a_rerun_in_the_same_run_folder_does_not_ask_again(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "r.jsonl", _rows())
    run = tmp_path / "run"
    spec = {"kind": "score", "records": str(data), "scorers": [_judge("", 8)]}
    with FakeEndpoint(latency_s=0.01) as ep:
        spec["scorers"][0]["endpoint"] = ep.url
        first = run_inprocess(run, spec)
        assert first.returncode == 0 and ep.total == N
        answers = run / "outputs" / "api_answers.jsonl"
        assert len(answers.read_text().splitlines()) == N
        # killed after the answers arrived but before the batch's scores were written
        shutil.rmtree(run / "outputs" / "parts")
        (run / "outputs" / "records.jsonl").unlink()
        second = run_inprocess(run, spec)
        assert second.returncode == 0 and ep.total == N  # nothing asked twice
    assert second.records() == first.records()
