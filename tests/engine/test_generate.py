"""The generate job end to end on the tiny models: batching, seeds, resume, best-of-N, attacks, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
from job_harness import (
    collect,
    instruction_rows,
    run_inprocess,
    run_job,
    start_job,
    write_jsonl,
    write_run_dir,
)


def gen_spec(tiny, data: Path, **kw) -> dict:  # noqa: ANN001
    return {"kind": "generate", "model": str(tiny.llama), "dataset": str(data), "max_new_tokens": 10, **kw}


def responses(result) -> list:  # noqa: ANN001
    return [r.get("responses", r["response"]) for r in result.records()]


def test_greedy_output_is_the_same_with_batch_size_1_and_8(tiny, prompts: Path, tmp_path: Path) -> None:
    one = run_inprocess(tmp_path / "bs1", gen_spec(tiny, prompts, batch_size=1))
    eight = run_job(tmp_path / "bs8", gen_spec(tiny, prompts, batch_size=8))  # under the worker's launcher
    assert one.returncode == 0 and eight.returncode == 0, eight.stderr
    assert eight.exit_record()["returncode"] == 0
    assert responses(one) == responses(eight)
    rows = eight.records()
    src = [json.loads(line) for line in prompts.read_text().splitlines()]
    assert [r["id"] for r in rows] == [s["id"] for s in src]  # dataset order restored after length sorting
    assert all(r["instruction"] == s["instruction"] and r["output"] == s["output"] for r, s in zip(rows, src, strict=True))
    g = rows[0]["generator"]
    assert g["model"] == str(tiny.llama) and g["temperature"] == 0.0 and g["template"] == "chat"
    assert "_index" not in rows[0]
    # progress: records done / total, with a rate and an ETA, and tokens/s
    prog = [e for e in eight.events if e["type"] == "progress"]
    assert prog[-1]["done"] == prog[-1]["total"] == 12 and prog[-1]["unit"] == "records"
    assert any(e.get("eta_s") is not None for e in prog)
    assert eight.summary()["gen_tokens_per_s"] > 0


def test_sampled_output_is_reproducible_with_a_seed_and_independent_of_batching(tiny, prompts: Path,
                                                                                 tmp_path: Path) -> None:
    kw = dict(temperature=1.0, top_p=0.95, top_k=40, n=2, max_new_tokens=8)
    a = run_inprocess(tmp_path / "a", gen_spec(tiny, prompts, seed=7, batch_size=1, **kw))
    b = run_inprocess(tmp_path / "b", gen_spec(tiny, prompts, seed=7, batch_size=5, **kw))
    c = run_inprocess(tmp_path / "c", gen_spec(tiny, prompts, seed=8, batch_size=5, **kw))
    assert responses(a) == responses(b)
    assert responses(a) != responses(c)
    assert all(len(r) == 2 for r in responses(a))
    assert any(r[0] != r[1] for r in responses(a))  # the n samples of a prompt differ


def test_best_and_worst_of_n_pick_the_reward_argmax_and_argmin(tiny, prompts: Path, tmp_path: Path) -> None:
    from engine.jobs.scorers.reward import RewardModel
    from engine.specs.common import ModelRef

    kw = dict(temperature=1.0, n=4, seed=3, reward_model=str(tiny.reward), batch_size=4)
    best = run_inprocess(tmp_path / "best", gen_spec(tiny, prompts, select="best", **kw))
    worst = run_inprocess(tmp_path / "worst", gen_spec(tiny, prompts, select="worst", **kw))
    assert best.returncode == 0 and worst.returncode == 0
    rm = RewardModel(ModelRef(path=str(tiny.reward)), "cpu", batch_size=1)
    for b, w in zip(best.records(), worst.records(), strict=True):
        assert b["responses"] == w["responses"]  # same seed, same samples
        r = b["rewards"]
        assert b["selected_index"] == r.index(max(r)) and w["selected_index"] == r.index(min(r))
        assert b["response"] == b["responses"][b["selected_index"]] and b["reward"] == max(r)
        user = b["instruction"] + ("\n\n" + b["input"] if b["input"] else "")
        alone = rm.score_pairs([(user, t) for t in b["responses"]])  # batch of one each
        assert alone == pytest.approx(r, abs=1e-5)
    assert best.summary()["mean_reward"] >= worst.summary()["mean_reward"]


def test_attacks_build_the_papers_prompts_and_skip_records_without_input(tiny, tmp_path: Path) -> None:
    from engine.data.injection import attack_prompt

    rows = instruction_rows(6)
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    for attack, defended in (("naive", False), ("completion_real", True)):
        res = run_inprocess(tmp_path / attack, gen_spec(tiny, data, template="struq", attack=attack,
                                                        defense_filter=defended, max_new_tokens=2))
        assert res.returncode == 0
        out = res.records()
        with_input = [r for r in rows if r["input"]]
        assert [r["id"] for r in out] == [r["id"] for r in with_input]
        for o, r in zip(out, with_input, strict=True):
            assert o["attack"] == attack
            assert o["prompt"] == attack_prompt(r, attack, defended, random.Random(0))  # deterministic attacks
        assert res.infos()[0]["skipped_without_input"] == len(rows) - len(with_input)


def _wait_for_lines(path_glob: Path, n: int, proc, timeout: float = 120) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in path_glob.parent.glob(path_glob.name):
            if p.read_bytes().count(b"\n") >= n:
                return
        if proc.poll() is not None:
            raise AssertionError("job finished before it could be killed")
        time.sleep(0.01)
    raise AssertionError("no output appeared")


def test_killed_job_resumes_without_duplicates_and_bad_input_keeps_partial_output(tiny, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "many.jsonl", instruction_rows(30))
    spec = gen_spec(tiny, data, batch_size=2, max_new_tokens=8)
    reference = run_inprocess(tmp_path / "ref", spec)
    run = tmp_path / "run"
    write_run_dir(run, spec)
    # the job holds once it has written 4 rows (the hold file never appears), so the kill lands mid-run
    proc = start_job(run, env={"LABDECK_HOLD_AFTER": f"4:{tmp_path / 'never'}"})
    partial = run / "outputs" / "records.partial.*.jsonl"
    _wait_for_lines(partial, 4, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    part = next((run / "outputs").glob("records.partial.*.jsonl"))
    kept = part.read_bytes().count(b"\n")
    assert 4 <= kept < 30 and not (run / "outputs" / "records.jsonl").exists()

    # A rerun whose model has gone away fails at once with one line naming the path; the partial output stays.
    moved = tmp_path / "moved"
    os.rename(tiny.llama, moved)
    try:
        bad = collect(run, start_job(run))
    finally:
        os.rename(moved, tiny.llama)
    assert bad.returncode == 3
    assert str(tiny.llama) in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert bad.errors()[-1]["reason"] == "bad_input"
    assert part.read_bytes().count(b"\n") == kept

    again = collect(run, start_job(run))
    assert again.returncode == 0, again.stderr
    built = [e for e in again.infos() if e["message"] == "generate: prompts built"]
    assert built[-1]["already_done"] == kept  # events.jsonl spans every attempt: the last one is this run
    rows = again.records()
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(30)]  # each record once, in order
    assert responses(again) == responses(reference)
    assert not list((run / "outputs").glob("records.partial.*"))


def test_resuming_with_other_parameters_is_refused(tiny, prompts: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_inprocess(run, gen_spec(tiny, prompts)).returncode == 0
    res = run_inprocess(run, gen_spec(tiny, prompts, max_new_tokens=11))
    assert res.returncode == 3 and "max_new_tokens" in res.errors()[-1]["message"]
    assert run_inprocess(run, gen_spec(tiny, prompts, batch_size=3)).returncode == 0  # batch size may change


@pytest.mark.parametrize("case", ["model", "hub", "dataset", "field", "template", "reward", "id"])
def test_bad_input_fails_at_once_with_one_line(case: str, tiny, prompts: Path, no_template_model: Path,
                                               tmp_path: Path) -> None:
    spec = gen_spec(tiny, prompts)
    if case == "model":
        spec["model"], expect = str(tmp_path / "nope"), str(tmp_path / "nope")
    elif case == "hub":  # offline here: a hub id that is not in the cache
        spec["model"], expect = "labdeck-tests/no-such-model", "labdeck-tests/no-such-model: not "  # not cached, not local
    elif case == "dataset":
        spec["dataset"], expect = str(tmp_path / "missing.jsonl"), "missing.jsonl"
    elif case == "field":
        spec["dataset"], expect = {"path": str(prompts), "instruction_field": "prompt"}, "'prompt'"
    elif case == "template":
        spec["model"], expect = str(no_template_model), "no chat template"
    elif case == "reward":
        spec.update(temperature=1.0, n=2, select="best", reward_model=str(tiny.llama))
        expect = "not a sequence classifier"
    else:
        spec["dataset"], expect = {"path": str(prompts), "id_field": "missing_id"}, "'missing_id'"
    res = run_inprocess(tmp_path / "run", spec)
    assert res.returncode == 3
    msg = res.errors()[-1]["message"]
    assert expect in msg and "\n" not in msg


def test_bad_input_exits_3_through_the_job_process(tiny, tmp_path: Path) -> None:
    res = run_job(tmp_path / "run", gen_spec(tiny, tmp_path / "absent.jsonl"))
    assert res.returncode == 3 and res.exit_record()["returncode"] == 3
    assert res.stderr.strip().splitlines() == [f"labdeck: dataset {tmp_path / 'absent.jsonl'}: no such file"]


def test_vllm_backend_without_vllm_is_a_clear_error(tiny, prompts: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, as on a box without it
    res = run_inprocess(tmp_path / "run", gen_spec(tiny, prompts, backend="vllm"))
    assert res.returncode == 3 and "vLLM is not installed" in res.errors()[-1]["message"]


@pytest.mark.slow  # two interpreters importing torch plus a gloo group: ~20 s on 2 busy cores
def test_data_parallel_launch_splits_the_records_and_merges_them_in_order(tiny, prompts: Path, tmp_path: Path) -> None:
    """Two processes under torchrun (CPU, gloo): each takes half the pending records, rank 0 merges; sampled output
    equals a single-process run because samples are seeded per record."""
    import subprocess
    import sys

    from job_harness import job_env

    spec = gen_spec(tiny, prompts, temperature=0.9, seed=5, max_new_tokens=4, batch_size=2)
    single = run_inprocess(tmp_path / "one", spec)
    run = tmp_path / "dp"
    write_run_dir(run, spec)
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "engine.jobs", str(run)],
        env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["processes"] for e in events if e.get("message") == "generate: prompts built"] == [2]
    assert sum(e["type"] == "artifact" for e in events) == 1  # rank 0 alone finishes
    rows = [json.loads(line) for line in (run / "outputs" / "records.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rows] == [r["response"] for r in single.records()]


def test_the_checkpoints_own_sampling_defaults_do_not_leak_in(tiny, prompts: Path, tmp_path: Path) -> None:
    """A checkpoint's generation_config.json sets sampling and decoding constraints; the spec alone decides
    (transformers 5 fills whatever the passed config does not set explicitly from the checkpoint's)."""
    import shutil

    noisy = tmp_path / "noisy"
    shutil.copytree(tiny.llama, noisy)
    gc = json.loads((noisy / "generation_config.json").read_text())
    gc.pop("_from_model_config", None)  # as in a real instruct checkpoint's file
    gc.update(do_sample=True, temperature=0.6, top_p=0.5, top_k=3, repetition_penalty=1.5, no_repeat_ngram_size=1)
    (noisy / "generation_config.json").write_text(json.dumps(gc))
    clean = run_inprocess(tmp_path / "clean", gen_spec(tiny, prompts))
    other = run_inprocess(tmp_path / "noisy-run", {**gen_spec(tiny, prompts), "model": str(noisy)})
    assert responses(clean) == responses(other)
