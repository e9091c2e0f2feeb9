"""The finetune job end to end on tiny local models (issue 5): SFT, LoRA, resume, OOM halving, bad input."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from job_harness import read_events, run_inprocess, start_job, write_run_dir

RECORDS = [{"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i} {i} {i}."} for i in range(8)]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def data(tmp_path: Path) -> str:
    return write_jsonl(tmp_path / "data.jsonl", RECORDS)


def sft(tiny, data: str, **kw) -> dict:  # noqa: ANN001, ANN003
    spec = dict(kind="finetune", model=str(tiny.llama), dataset=data, template="alpaca", learning_rate=3e-3,
                max_steps=20, per_device_batch=4, grad_accum=1, warmup_steps=0)
    spec.update(kw)
    return spec


def test_sft_loss_falls_on_a_memorisable_set_and_the_model_is_saved(tiny, data, tmp_path) -> None:  # noqa: ANN001
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = run_inprocess(tmp_path / "run", sft(tiny, data, max_steps=30))
    assert res.returncode == 0, res.errors()
    loss = res.series("loss")
    assert sorted(loss) == list(range(1, 31))
    assert loss[30] < 0.5 * loss[1]
    # live events every step: progress with ETA, lr, grad norm, tokens/s, peak memory
    progress = [e for e in res.events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == 30 and progress[-1]["unit"] == "steps"
    assert any(e["eta_s"] is not None for e in progress[1:-1])
    for name in ("learning_rate", "grad_norm", "tokens_per_s", "peak_mem_gb", "epoch"):
        assert len(res.series(name)) == 30, name
    lr = res.series("learning_rate")
    assert lr[1] == pytest.approx(3e-3) and lr[30] < lr[15] < lr[1]  # cosine
    assert res.summary("final_loss") == pytest.approx(loss[30])
    assert any("length-grouped" in e["message"] for e in res.infos())  # which data path ran, said once
    [art] = res.artifacts()
    assert art["path"] == "outputs/model" and art["meta"]["format"] == "full"
    out = tmp_path / "run" / "outputs" / "model"
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"
    assert model.dtype.is_floating_point
    assert not list((tmp_path / "run" / "outputs").glob(".*partial*"))


def test_prompt_tokens_contribute_nothing(tiny, data, tmp_path) -> None:  # noqa: ANN001
    """The first step's loss is the mean NLL over response tokens only, by hand from full logits;
    a step whose prompts change but whose responses and prompt lengths do not keeps its masks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = run_inprocess(tmp_path / "run", sft(tiny, data, max_steps=1, per_device_batch=8))
    assert res.returncode == 0
    tok = AutoTokenizer.from_pretrained(tiny.tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny.llama).eval()
    from engine.jobs._train_data import IGNORE, sft_segments, tokenize_segments
    from engine.specs.common import DatasetRef

    total, count = 0.0, 0
    for rec in RECORDS:
        segs = sft_segments(rec, DatasetRef(path="x"), "alpaca", tok)
        ids = tok(segs[0][0] + segs[1][0], return_tensors="pt")["input_ids"]
        n_prompt = len(tok(segs[0][0])["input_ids"])  # docs/science.md §0: the prefix's own token count
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        targets = ids[0, 1:]
        per_token = -logp[torch.arange(len(targets)), targets]
        total += float(per_token[n_prompt - 1 :].sum())
        count += len(targets) - (n_prompt - 1)
        ex, _ = tokenize_segments(tok, segs, 512, True)
        assert (ex.labels[:n_prompt] == IGNORE).all() and (ex.labels[n_prompt:] != IGNORE).all()
    assert res.series("loss")[1] == pytest.approx(total / count, rel=1e-5)


def test_lora_sft_saves_an_adapter(tiny, data, tmp_path) -> None:  # noqa: ANN001
    res = run_inprocess(tmp_path / "run", sft(tiny, data, max_steps=6, lora={"r": 4, "alpha": 8}, gradient_checkpointing=True))
    assert res.returncode == 0, res.errors()
    out = tmp_path / "run" / "outputs" / "model"
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert (out / "tokenizer.json").is_file()
    assert res.artifacts()[0]["meta"]["format"] == "adapter"
    assert res.series("loss")[6] < res.series("loss")[1]


def test_chat_records_and_forced_packing(tiny, tmp_path) -> None:  # noqa: ANN001
    rows = [{"messages": [{"role": "user", "content": f"Count to {i}."},
                          {"role": "assistant", "content": " ".join(str(j) for j in range(i + 1))}]} for i in range(6)]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    spec = sft(tiny, data, template="chat", dataset={"path": data, "messages_field": "messages"}, max_steps=4,
               per_device_batch=3, packing="on")
    res = run_inprocess(tmp_path / "run", spec)
    assert res.returncode == 0, res.errors()
    assert any("padding-free" in e["message"] for e in res.infos())


def _oom_once(monkeypatch: pytest.MonkeyPatch, size: int) -> list[int]:
    from engine.jobs import _train_loop

    real = _train_loop.TrainLoop._micro_step
    raised: list[int] = []

    def fake(self, indices, norm, sync):  # noqa: ANN001, ANN202
        if len(indices) >= size and not raised:
            raised.append(len(indices))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, indices, norm, sync)

    monkeypatch.setattr(_train_loop.TrainLoop, "_micro_step", fake)
    return raised


def test_oom_retry_halves_the_micro_batch_and_keeps_the_trajectory(tiny, data, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    base = run_inprocess(tmp_path / "plain", sft(tiny, data, max_steps=4))
    raised = _oom_once(monkeypatch, 4)
    res = run_inprocess(tmp_path / "oom", sft(tiny, data, max_steps=4, oom_retry=True))
    assert res.returncode == 0 and raised == [4]
    [note] = [e for e in res.infos() if e.get("oom_retry")]
    assert note["micro_batch"] == 2 and note["grad_accum"] == 2 and "cuda_oom" in note["message"]
    # same examples per step, loss normalised by the step's tokens: the same run
    for step, value in base.series("loss").items():
        assert res.series("loss")[step] == pytest.approx(value, rel=1e-4)


def test_oom_without_retry_fails_as_cuda_oom(tiny, data, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    _oom_once(monkeypatch, 4)
    res = run_inprocess(tmp_path / "oom", sft(tiny, data, max_steps=2))
    assert res.returncode == 4 and res.errors()[0]["reason"] == "cuda_oom"


# ------------------------------------------------------------------------------------------- resume


def test_kill_and_resume_continues_at_the_checkpoint_step_with_the_same_data_order(tiny, tmp_path) -> None:  # noqa: ANN001
    """SIGKILL a real job process after a checkpoint, resume it, and compare with an uninterrupted run.

    LoRA with dropout 0.1 and 16 records in micro-batches of 2 x accumulation 2 over 10 steps (two
    and a half epochs): equal losses after the resume need the same examples per step, the same
    dropout masks, and the restored optimizer and scheduler.
    """
    import torch
    from safetensors.torch import load_file

    rows = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} " * (1 + i % 5)} for i in range(16)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    spec = sft(tiny, data, max_steps=10, per_device_batch=2, grad_accum=2, checkpoint_every=2, keep_last=2,
               lora={"r": 4, "alpha": 8, "dropout": 0.1}, learning_rate=1e-2)
    full = run_inprocess(tmp_path / "full", spec)
    assert full.returncode == 0, full.errors()

    run = tmp_path / "killed"
    write_run_dir(run, spec)
    # the job holds after step 4 (its checkpoint written; the hold file never appears), so the kill lands mid-run
    proc = start_job(run, env={"LABDECK_HOLD_AFTER": f"4:{tmp_path / 'never'}"})
    deadline = time.time() + 120
    while time.time() < deadline:
        if any(e.get("step") == 4 and "checkpoint" in e.get("message", "") for e in read_events(run)):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = read_events(run)
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "step-0000004" in ckpts and not (run / "outputs" / "model").exists()
    last = max(int(n.split("-")[1]) for n in ckpts if n.startswith("step-"))
    assert last == 4  # held right after step 4

    resumed = run_inprocess(run)  # resume_from: auto
    assert resumed.returncode == 0, resumed.errors()
    [note] = [e for e in resumed.infos() if "resumed_step" in e]
    assert note["resumed_step"] == last
    after = {s: v for s, v in resumed.series("loss").items() if s > last}
    assert sorted(after) == list(range(last + 1, 11))
    for step, value in after.items():
        assert value == pytest.approx(full.series("loss")[step], rel=1e-5, abs=1e-6), step
    # steps before the kill also matched the uninterrupted run (same order from the start)
    before = {e["step"]: e["value"] for e in killed if e["type"] == "metric" and e["name"] == "loss"}
    for step in range(1, last + 1):
        assert before[step] == pytest.approx(full.series("loss")[step], rel=1e-5)
    a = load_file(tmp_path / "full" / "outputs" / "model" / "adapter_model.safetensors")
    b = load_file(run / "outputs" / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len([p for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")]) <= 2  # keep_last


def test_a_resume_folder_from_another_run_is_refused(tiny, data, tmp_path) -> None:  # noqa: ANN001
    first = run_inprocess(tmp_path / "a", sft(tiny, data, max_steps=4, checkpoint_every=2))
    assert first.returncode == 0
    other = tmp_path / "b"
    res = run_inprocess(other, sft(tiny, data, max_steps=4, learning_rate=1e-3, resume_from=str(tmp_path / "a")))
    assert res.returncode == 3
    [err] = res.errors()
    assert "another run" in err["message"] and "learning_rate" in err["message"] and "\n" not in err["message"]
    assert not (other / "outputs" / "model").exists() and not (other / "checkpoints").exists()
    # the same training spec in another run folder may continue from it (a retry elsewhere)
    same = run_inprocess(tmp_path / "c", sft(tiny, data, max_steps=4, checkpoint_every=3,
                                             resume_from=str(tmp_path / "a" / "checkpoints")))
    assert same.returncode == 0 and [e for e in same.infos() if e.get("resumed_step") == 2]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"dataset": "__missing_field__"}, "has no field 'output'"),
        ({"model": "/nonexistent/model"}, "no such folder"),
        ({"dataset": "/nonexistent/data.jsonl"}, "no such file"),
        ({"per_device_batch": 4, "grad_accum": 4}, "larger than the 8 records"),
        ({"per_device_batch": 16}, "needs at least 16"),
        ({"max_steps": None, "epochs": 1, "warmup_steps": 5}, "never decay"),
        ({"resume_from": "latest"}, "no checkpoint"),
        ({"resume_from": "/nonexistent"}, "not a checkpoint folder"),
        ({"method": "dpo"}, "has no field 'chosen'"),
    ],
)
def test_bad_input_gets_one_line_before_training(tiny, data, tmp_path, change, needle) -> None:  # noqa: ANN001
    if change.get("dataset") == "__missing_field__":
        change = {"dataset": write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x"}])}
    res = run_inprocess(tmp_path / "run", sft(tiny, data, **change))
    assert res.returncode == 3
    [err] = res.errors()
    assert err["reason"] == "bad_input" and needle in err["message"] and "\n" not in err["message"]
    assert not any(e["type"] == "metric" for e in res.events)
    assert not (tmp_path / "run" / "outputs" / "model").exists()


def test_a_finished_run_is_not_overwritten(tiny, data, tmp_path) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    out = run / "outputs" / "model"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("old")
    res = run_inprocess(run, sft(tiny, data, max_steps=2))
    assert res.returncode == 3 and "already exists" in res.errors()[0]["message"]
    assert (out / "keep.txt").read_text() == "old"


def test_checkpoints_of_this_run_are_not_silently_restarted(tiny, data, tmp_path) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    assert run_inprocess(run, sft(tiny, data, max_steps=4, checkpoint_every=2)).returncode == 0
    import shutil

    shutil.rmtree(run / "outputs")
    (run / "events.jsonl").unlink()
    res = run_inprocess(run, sft(tiny, data, max_steps=4, checkpoint_every=2, resume_from=None))
    assert res.returncode == 3 and "already has checkpoints" in res.errors()[0]["message"]


@pytest.mark.slow
def test_two_process_data_parallel_matches_one_process_with_accumulation(tiny, tmp_path) -> None:  # noqa: ANN001
    """torchrun with 2 CPU processes (gloo), micro-batch 2 each, against one process with 2 x 2 accumulation:
    the same examples per step and a loss normalised over both ranks' tokens, so the same trajectory;
    events, checkpoints and the model are written once (rank 0). FSDP cannot be tried here: accelerate
    turns it on only over accelerators, never over CPU processes. Slow: two more torch imports on shared cores."""
    import subprocess
    import sys

    from job_harness import job_env

    rows = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} " * (1 + i % 5)} for i in range(16)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    common = dict(max_steps=4, per_device_batch=2, learning_rate=1e-2)
    single = run_inprocess(tmp_path / "single", sft(tiny, data, grad_accum=2, **common))
    assert single.returncode == 0, single.errors()
    run = tmp_path / "ddp"
    write_run_dir(run, sft(tiny, data, grad_accum=1, checkpoint_every=2, **common))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "engine.jobs", str(run)], env=job_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = read_events(run)
    losses = {e["step"]: e["value"] for e in events if e["type"] == "metric" and e["name"] == "loss"}
    assert len([e for e in events if e["type"] == "metric" and e["name"] == "loss"]) == 4  # rank 0 only
    for step, value in single.series("loss").items():
        assert losses[step] == pytest.approx(value, rel=1e-5), step
    assert [e["parallel"] for e in events if "parallel" in e] == ["DDP"]
    assert len([e for e in events if e["type"] == "artifact"]) == 1
    assert (run / "outputs" / "model" / "model.safetensors").is_file()
    assert (run / "checkpoints" / "step-0000002" / "trainer_state.json").is_file()  # saved under DDP, once
