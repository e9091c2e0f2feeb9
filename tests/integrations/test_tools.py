"""Others' tools as labdeck jobs: lm-eval's results as per-task metrics, and the shipped TRL / lm-eval examples.

The examples' tiny variants run under a real worker when trl / lm-eval are installed (they are in
the dev extra), with `-m slow` (minutes each); `fixtures/lm_eval_results.json` is a real lm-eval 0.4 results file (the tiny
variant's task on a tiny model), so the parser is tested even where lm-eval is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from db.models import TERMINAL_STATUSES
from db.queries import list_jobs
from db.session import open_store
from engine.events import iter_events
from engine.integrations import lm_eval_metrics, report_lm_eval

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURE = HERE / "fixtures" / "lm_eval_results.json"


def test_lm_eval_results_become_per_task_metrics() -> None:
    got = lm_eval_metrics(FIXTURE)
    assert got == {"acc/tiny_facts": 0.25, "acc_stderr/tiny_facts": pytest.approx(0.16366, abs=1e-5),
                   "acc_norm/tiny_facts": 0.25, "acc_norm_stderr/tiny_facts": pytest.approx(0.16366, abs=1e-5)}
    data = json.loads(FIXTURE.read_text())
    data["results"]["gsm8k"] = {"alias": "gsm8k", "exact_match,strict-match": 0.5, "exact_match_stderr,strict-match": "N/A"}
    data["groups"] = {"mmlu": {"alias": "mmlu", "acc,none": 0.6}}
    got = lm_eval_metrics(data)
    assert got["exact_match_strict-match/gsm8k"] == 0.5 and "exact_match_stderr_strict-match/gsm8k" not in got
    assert got["acc/mmlu"] == 0.6


def test_a_file_that_is_not_lm_eval_output_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"metrics": {}}')
    with pytest.raises(ValueError, match=r"x.json: no 'results' object"):
        lm_eval_metrics(bad)
    with pytest.raises(ValueError, match="no lm-eval results_"):
        report_lm_eval(tmp_path, reporter=object())  # a folder without results


def test_reported_lm_eval_metrics_pivot_like_labdeck_ones(tmp_path: Path) -> None:
    """Two models' lm-eval results as command jobs' metrics; `labdeck results --metric 'acc/*'` puts tasks in rows."""
    from worker_helpers import ThreadWorker, submit, wait_status

    from db.session import Store

    home = tmp_path / "home"
    store = Store(home)
    results = tmp_path / "res"
    results.mkdir()
    data = json.loads(FIXTURE.read_text())
    ids = []
    for model, acc in (("a", 0.25), ("b", 0.75)):
        data["results"]["tiny_facts"]["acc,none"] = acc
        data["results"]["other"] = {"alias": "other", "acc,none": acc / 2}
        (results / f"{model}").mkdir()
        (results / model / "results_2026.json").write_text(json.dumps(data))
        ids.append(submit(store, [sys.executable, "-m", "engine.integrations.lm_eval", str(results / model)],
                          experiment="lm", name=f"eval-{model}", env={"PYTHONPATH": str(REPO)},
                          sweep={"grid": {"env.MODEL": [model]}}))
    with ThreadWorker(home):
        for jid in ids:
            assert wait_status(store, jid, timeout=60) == "succeeded"
    r = subprocess.run([sys.executable, "-m", "cli", "results", "lm", "--rows", "group", "--cols", "env.MODEL",
                        "--metric", "acc/*", "--format", "json", "--home", str(home)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    cells = {(c["row"], c["col"]): c["mean"] for c in p["cells"]}
    assert cells == {("tiny_facts", "a"): 0.25, ("tiny_facts", "b"): 0.75, ("other", "a"): 0.125, ("other", "b"): 0.375}


def _run_example(tmp_path: Path, name: str, *extra: str, timeout_s: float = 600) -> tuple[Path, list]:
    home = tmp_path / f"home-{name}"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

    def labdeck(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", *args, "--home", str(home)], capture_output=True, text=True,
                              env=env, timeout=120)

    r = labdeck("submit", str(REPO / "examples" / name / "job.yaml"), "--variant", "tiny", "--no-worker", *extra)
    assert r.returncode == 0, r.stderr
    assert labdeck("worker", "start", "--cpu-slots", "2").returncode == 0
    try:
        store = open_store(home)
        deadline = time.monotonic() + timeout_s
        while True:
            with store.read() as s:
                jobs = list_jobs(s, newest_first=False)
            if all(j.status in TERMINAL_STATUSES for j in jobs):
                break
            assert time.monotonic() < deadline, f"{name} tiny did not finish in {timeout_s} s"
            time.sleep(0.5)
    finally:
        labdeck("worker", "stop", "--now", "--wait")
    logs = {j.id: (home / "runs" / str(j.id) / "log.txt").read_text(errors="replace")[-1500:] for j in jobs}
    assert {j.status for j in jobs} == {"succeeded"}, logs
    return home, jobs


@pytest.mark.slow  # about 2.5 min on 2 busy cores: TRL's import and a worker, for 2 x 4 steps
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl is not installed")
def test_trl_sft_example_reports_its_loss_curve(tmp_path: Path) -> None:
    home, jobs = _run_example(tmp_path, "trl_sft", "--var", f"script={REPO / 'examples' / 'trl_sft' / 'sft.py'}")
    sft = [j for j in jobs if j.params.get("stage") == "sft"]
    assert sorted(j.params["learning_rate"] for j in sft) == ["0.001", "0.01"]
    for j in sft:
        ev = list(iter_events(home / "runs" / str(j.id) / "events.jsonl"))
        assert [e["step"] for e in ev if e["type"] == "metric" and e["name"] == "loss"] == [1, 2, 3, 4]
        assert any(e["type"] == "metric" and e["name"] == "train_loss" and "step" not in e for e in ev)
        assert [e["done"] for e in ev if e["type"] == "progress"][-1] == 4


@pytest.mark.slow  # about 3.5 min on 2 busy cores, mostly lm-eval's import twice
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval is not installed")
def test_lm_eval_example_reports_per_task_metrics(tmp_path: Path) -> None:
    home, jobs = _run_example(tmp_path, "lm_eval")
    evals = [j for j in jobs if j.params.get("stage") == "eval"]
    assert len(evals) == 2
    for j in evals:
        ev = list(iter_events(home / "runs" / str(j.id) / "events.jsonl"))
        names = {e["name"] for e in ev if e["type"] == "metric"}
        assert {"acc/tiny_facts", "acc_norm/tiny_facts"} <= names
        assert list((home / "runs" / str(j.id) / "outputs" / "lm_eval").rglob("results_*.json"))
