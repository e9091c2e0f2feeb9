"""A small home for the housekeeping tests (archive, delete, disk, prune): real rows, real run folders.

`lr-sweep`: four finished LoRA fine-tunes over the learning rate, each with a run folder holding a
log, a model (`outputs/model/`, recorded as its `model` artifact) and a resumable checkpoint, of
known sizes, and an `eval_loss` curve whose final values are FINAL_LOSS (job order); one more
fine-tune failed. `busy`: a running and a queued command job. Timestamps use the tests' frozen clock.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update
from tui_seed import FROZEN

from db import queries
from db.models import Experiment, Job, JobStatus
from db.queue import claim, enqueue, record_artifacts, record_metrics, transition
from db.session import Store
from engine.specfile import expand

LRS = [1e-5, 2e-5, 5e-5, 1e-4]
FINAL_LOSS = [0.9, 0.5, 0.7, 1.2]  # best (lowest) first: jobs 2, 3, 1, 4 of the sweep
MODEL_BYTES = [4000, 5000, 6000, 7000]
CHECKPOINT_BYTES = 1500
LOG_BYTES = 100


def _write(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)


def run_bytes(i: int) -> int:
    """What job i's run folder takes on disk (apparent size)."""
    return MODEL_BYTES[i] + CHECKPOINT_BYTES + LOG_BYTES


def seed_housekeeping(store: Store, now: float = FROZEN) -> dict[str, list[int]]:
    sweep = expand({"experiment": "lr-sweep", "name": "sft", "kind": "finetune", "model": {"path": "student"},
                    "dataset": {"path": "teacher.jsonl"}, "lora": {"r": 8, "alpha": 16},
                    "sweep": {"grid": {"learning_rate": LRS}}}, "seed")
    failed = expand({"experiment": "lr-sweep", "name": "sft-broken", "kind": "finetune", "model": {"path": "student"},
                     "dataset": {"path": "missing.jsonl"}}, "seed")
    busy = expand({"experiment": "busy", "name": "wait", "kind": "command", "command": ["sleep", "1"],
                   "sweep": {"grid": {"env.N": ["1", "2"]}}}, "seed")
    with store.write() as s:
        ids = enqueue(s, sweep.drafts, resolve=sweep.resolver(store.home))
        broken = enqueue(s, failed.drafts, resolve=failed.resolver(store.home))
        busy_ids = enqueue(s, busy.drafts, resolve=busy.resolver(store.home))
    metrics, artifacts = [], []
    for i, jid in enumerate(ids + broken):
        folder = store.home / "runs" / str(jid)
        with store.write() as s:
            claim(s, jid, host="box", run_dir=str(folder))
            if jid in broken:
                transition(s, jid, JobStatus.failed, exit_code=3, failure_reason="bad_input")
            else:
                transition(s, jid, JobStatus.succeeded, exit_code=0)
        _write(folder / "log.txt", LOG_BYTES)
        if jid in broken:
            continue
        _write(folder / "outputs" / "model" / "adapter_model.safetensors", MODEL_BYTES[i])
        _write(folder / "checkpoints" / "step-0000010" / "trainable.safetensors", CHECKPOINT_BYTES)
        artifacts.append({"job_id": jid, "kind": "model", "path": str(folder / "outputs" / "model"),
                          "meta": '{"format": "adapter"}', "created_at": now - 100})
        for step, value in ((5, FINAL_LOSS[i] + 0.3), (10, FINAL_LOSS[i])):
            metrics.append({"job_id": jid, "name": "eval_loss", "step": step, "value": value, "time": now - 200 + step})
    with store.write() as s:
        record_metrics(s, metrics)
        record_artifacts(s, artifacts)
        claim(s, busy_ids[0], host="box", run_dir=str(store.home / "runs" / str(busy_ids[0])))
    with store.write() as s:  # the frozen clock everywhere: snapshots never change with the time of day
        s.execute(update(Job).values(queued_at=now - 600, started_at=now - 500))
        s.execute(update(Job).where(Job.status != JobStatus.queued).values(finished_at=now - 300))
        s.execute(update(Job).where(Job.status == JobStatus.running).values(finished_at=None, heartbeat_at=now - 1))
        s.execute(update(Experiment).values(created_at=now - 700))
    with store.read() as s:
        assert len(queries.list_jobs(s)) == 7
    return {"sweep": ids, "broken": broken, "busy": busy_ids}
