"""A small, fixed labdeck home for the app's tests: every status, a sweep with results, a live job.

Every timestamp is relative to `FROZEN`, the tests' clock, so snapshots never change with the
time of day; run folders sit inside the home, which the app shows relative to it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update

from db import queries
from db.models import Job, JobStatus, Worker
from db.queue import claim, enqueue, record_artifacts, record_metrics, set_setting, transition
from db.session import Store
from engine.specfile import expand

FROZEN = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC

TEACHERS = ["gemma-2-9b", "llama-3-70b", "qwen2-72b"]
STUDENTS = ["qwen2.5-0.5b", "llama-3.2-1b"]
# win rate of student s tuned on teacher t (seeds 0 and 1): a table like the CAR paper's
WIN = {
    ("qwen2.5-0.5b", "gemma-2-9b"): (0.412, 0.398),
    ("qwen2.5-0.5b", "llama-3-70b"): (0.355, 0.361),
    ("qwen2.5-0.5b", "qwen2-72b"): (0.471, 0.489),
    ("llama-3.2-1b", "gemma-2-9b"): (0.523, 0.507),
    ("llama-3.2-1b", "llama-3-70b"): (0.446, 0.452),
    ("llama-3.2-1b", "qwen2-72b"): (0.498, 0.512),
}


def _jobs(store: Store, data: dict) -> list[int]:
    exp = expand(data, "seed")
    with store.write() as s:
        return enqueue(s, exp.drafts, resolve=exp.resolver(store.home))


def _set(store: Store, job_id: int, **values) -> None:  # noqa: ANN003
    with store.write() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def seed(store: Store, now: float = FROZEN) -> dict[str, int]:
    """Fill `store` with the fixed scene; returns the ids of the jobs tests refer to."""
    ids: dict[str, int] = {}
    # 1. a finished sweep: 2 students x 3 teachers x 2 seeds, with win rates
    sweep = {
        "experiment": "car-teachers", "name": "sft", "kind": "finetune",
        "model": {"path": "student"}, "dataset": {"path": "teacher.jsonl"}, "gpus": 1,
        "lora": {"r": 8, "alpha": 16},
        "sweep": {"grid": {"model.path": STUDENTS, "dataset.path": [f"{t}.jsonl" for t in TEACHERS]}, "seeds": [0, 1]},
    }
    sweep_ids = _jobs(store, sweep)
    with store.read() as s:
        rows = queries.list_jobs(s, experiment="car-teachers", newest_first=False)
    metric_rows = []
    for i, r in enumerate(rows):
        student = r.params["model.path"]
        teacher = r.params["dataset.path"].removesuffix(".jsonl")
        seed_i = r.params["seed"]
        t0 = now - 86400 + i * 600
        with store.write() as s:
            claim(s, r.id, gpus=[i % 2], host="gpubox", run_dir=str(store.home / "runs" / str(r.id)))
            transition(s, r.id, JobStatus.succeeded, exit_code=0)
        _set(store, r.id, queued_at=t0 - 60, started_at=t0, finished_at=t0 + 540, heartbeat_at=t0 + 540,
             progress_done=100.0, progress_total=100.0, eta_s=0.0)
        win = WIN[(student, teacher)][seed_i]
        metric_rows.append({"job_id": r.id, "name": "win_rate", "step": None, "value": win, "time": t0 + 540})
        metric_rows.append({"job_id": r.id, "name": "loss", "step": 100, "value": 1.2 - win, "time": t0 + 530})
    with store.write() as s:
        record_metrics(s, metric_rows)
    ids["sweep_first"] = sweep_ids[0]

    # 2. a failed job (out of memory) with its last log lines
    failed = _jobs(store, {"experiment": "car-teachers", "name": "sft-8b", "kind": "finetune",
                           "model": "meta-llama/Llama-3.1-8B", "dataset": "data/alpaca.jsonl", "gpus": 1})[0]
    with store.write() as s:
        claim(s, failed, gpus=[1], host="gpubox", run_dir=str(store.home / "runs" / str(failed)))
        transition(s, failed, JobStatus.failed, exit_code=4, failure_reason="cuda_oom",
                   failure_detail="CUDA out of memory. Tried to allocate 2.00 GiB",
                   log_tail="step 12 loss 1.93\nstep 13 loss 1.91\ntorch.OutOfMemoryError: CUDA out of memory.")
    _set(store, failed, queued_at=now - 7200, started_at=now - 7100, finished_at=now - 6900)
    ids["failed"] = failed

    # 3. a cancelled and an interrupted job
    cancelled = _jobs(store, {"experiment": "scratch", "name": "hello", "kind": "command", "command": ["echo", "hi"]})[0]
    with store.write() as s:
        transition(s, cancelled, JobStatus.cancelled, failure_reason="cancelled", failure_detail="cancelled before it started")
    _set(store, cancelled, queued_at=now - 5000, finished_at=now - 4990)
    interrupted = _jobs(store, {"experiment": "scratch", "name": "eval-long", "kind": "command",
                                "command": ["python", "eval.py"]})[0]
    with store.write() as s:
        claim(s, interrupted, host="gpubox", run_dir=str(store.home / "runs" / str(interrupted)))
        transition(s, interrupted, JobStatus.interrupted, failure_reason="worker_lost",
                   failure_detail="the worker restarted and the process was gone")
    _set(store, interrupted, queued_at=now - 4000, started_at=now - 3900, finished_at=now - 3000)
    ids["cancelled"], ids["interrupted"] = cancelled, interrupted

    # 4. a running fine-tune with metric series, a log and artifacts
    running = _jobs(store, {"experiment": "calibration", "name": "lora-prompt", "kind": "finetune",
                            "method": "calibration", "model": "mistralai/Mistral-7B-v0.1",
                            "dataset": "data/mmlu-train.jsonl", "gpus": 1, "learning_rate": 1e-4})[0]
    run_dir = store.home / "runs" / str(running)
    run_dir.mkdir(parents=True, exist_ok=True)
    with store.write() as s:
        claim(s, running, gpus=[0], host="gpubox", run_dir=str(run_dir))
    _set(store, running, queued_at=now - 1900, started_at=now - 1800, heartbeat_at=now - 2, pid=4242,
         progress_done=620.0, progress_total=1000.0, eta_s=1100.0)
    series = []
    for step in range(0, 621, 10):
        series.append({"job_id": running, "name": "loss", "step": step, "value": 2.4 * 0.996 ** step + 0.35, "time": now})
        series.append({"job_id": running, "name": "learning_rate", "step": step,
                       "value": 1e-4 * min(1.0, step / 100) * (1 - step / 1000), "time": now})
        series.append({"job_id": running, "name": "tokens_per_s", "step": step,
                       "value": 4100 + (step * 37 % 300), "time": now})
    with store.write() as s:
        record_metrics(s, series)
        record_artifacts(s, [{"job_id": running, "kind": "checkpoint", "path": "outputs/checkpoint-500",
                              "meta": json.dumps({"step": 500}), "created_at": now - 300}])
    (run_dir / "log.txt").write_text("".join(f"step {st} loss {2.4 * 0.996 ** st + 0.35:.4f}\n" for st in range(0, 621, 10)))
    ids["running"] = running

    # 5. two queued jobs (one with higher priority)
    q1 = _jobs(store, {"experiment": "calibration", "name": "probe", "kind": "finetune", "method": "calibration",
                       "calibration_style": "probe", "model": "mistralai/Mistral-7B-v0.1",
                       "dataset": "data/mmlu-train.jsonl", "gpus": 1})[0]
    q2 = _jobs(store, {"experiment": "calibration", "name": "zero-shot", "kind": "score",
                       "records": "data/mmlu-test.jsonl",
                       "scorers": [{"type": "confidence", "model": "mistralai/Mistral-7B-v0.1"}], "priority": 5})[0]
    _set(store, q1, queued_at=now - 120)
    _set(store, q2, queued_at=now - 60)
    ids["queued"], ids["queued_high"] = q1, q2

    # 6. the worker and its GPU snapshot
    with store.write() as s:
        s.add(Worker(host="gpubox", pid=999, pid_start_time=now - 90000, started_at=now - 90000, heartbeat_at=now - 2))
        snap = {"t": now - 2, "gpus": [
            {"index": 0, "name": "NVIDIA H100 80GB HBM3", "mem_total_mb": 81559.0, "mem_used_mb": 41230.0, "util_pct": 87.0,
             "processes": [{"pid": 4242, "mem_mb": 40100.0, "job_id": running, "name": "python"}]},
            {"index": 1, "name": "NVIDIA H100 80GB HBM3", "mem_total_mb": 81559.0, "mem_used_mb": 9050.0, "util_pct": 12.0,
             "processes": [{"pid": 31337, "mem_mb": 9000.0, "job_id": None, "name": "jupyter (alice)"}]},
        ]}
        set_setting(s, queries.GPU_SNAPSHOT_KEY, json.dumps(snap))
    return ids


def seeded_home(root: Path) -> tuple[Store, dict[str, int]]:
    store = Store(root)
    return store, seed(store)
