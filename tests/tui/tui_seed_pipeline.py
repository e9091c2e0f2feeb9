"""A home holding the demo's CAR pipeline half-way through, for the experiments and pipeline views.

The shipped `demo_car` recipe (7 stages over teacher x student, 31 jobs) is expanded and queued as
`labdeck submit` does; then the scene is set with the store's own transitions: build, generate and
quality done, two compat jobs running, one fine-tune failed (its answer and judge skipped), two judges
with win rates. Timestamps are relative to the tests' frozen clock. `finish_judges` reports the
remaining win rates (what the results view follows).
"""

from __future__ import annotations

from sqlalchemy import update
from tui_seed import FROZEN

from db import queries
from db.experiments import describe
from db.models import Experiment, Job, JobStatus
from db.queue import claim, enqueue, record_metrics, skip_dependents_of_failed, transition
from db.session import Store
from engine.recipes import recipe_path
from engine.specfile import expand, load_file

WIN = {("teacher-a", "student-llama"): 0.33, ("teacher-a", "student-qwen"): 0.38,
       ("teacher-b", "student-llama"): 0.26, ("teacher-b", "student-qwen"): 0.29,
       ("teacher-c", "student-llama"): 0.0004, ("teacher-c", "student-qwen"): 0.0001}


def _set(store: Store, job_id: int, **values) -> None:  # noqa: ANN003
    with store.write() as s:
        s.execute(update(Job).where(Job.id == job_id).values(**values))


def _finish(store: Store, r, t0: float, status: JobStatus = JobStatus.succeeded) -> None:  # noqa: ANN001
    with store.write() as s:
        claim(s, r.id, host="box", run_dir=str(store.home / "runs" / str(r.id)))
        extra = {"exit_code": 0} if status == JobStatus.succeeded else {
            "exit_code": 1, "failure_reason": "nonzero_exit", "failure_detail": "exit status 1"}
        transition(s, r.id, status, **extra)
        if status != JobStatus.succeeded:
            skip_dependents_of_failed(s)
    _set(store, r.id, queued_at=t0 - 30, started_at=t0, finished_at=t0 + 60, progress_done=10.0, progress_total=10.0)


def seed_pipeline(store: Store, now: float = FROZEN) -> dict[str, int]:
    exp = expand(load_file(recipe_path("demo_car")), "demo_car.yaml")
    with store.write() as s:
        enqueue(s, exp.drafts, resolve=exp.resolver(store.home))
        describe(s, "demo-car", "CAR teacher selection in miniature (tiny local models)")
    with store.write() as s:  # the frozen clock everywhere: snapshots never change with the time of day
        s.execute(update(Job).values(queued_at=now - 3700))
        s.execute(update(Experiment).values(created_at=now - 3700))
    with store.read() as s:
        rows = queries.list_jobs(s, experiment="demo-car", newest_first=False)
    by_stage: dict[str, list] = {}
    for r in rows:
        by_stage.setdefault(r.params["stage"], []).append(r)
    t = now - 3600
    for r in by_stage["build"] + by_stage["generate"] + by_stage["quality"]:
        _finish(store, r, t)
        t += 90
    compat = by_stage["compat"]
    for r in compat[:4]:
        _finish(store, r, t)
        t += 60
    for r in compat[4:]:
        with store.write() as s:
            claim(s, r.id, host="box", run_dir=str(store.home / "runs" / str(r.id)))
        _set(store, r.id, queued_at=t - 30, started_at=now - 120, heartbeat_at=now - 1, progress_done=30.0,
             progress_total=48.0, eta_s=80.0)
    ids: dict[str, int] = {}
    point = {(r.params["teacher"], r.params["student"]): r for r in by_stage["sft"]}
    failed = point[("teacher-c", "student-qwen")]
    for key, r in point.items():
        if r is not failed and key[0] == "teacher-a":
            _finish(store, r, t)
            t += 60
    _finish(store, failed, t, JobStatus.failed)
    ids["sft_failed"] = failed.id
    answers = {(r.params["teacher"], r.params["student"]): r for r in by_stage["answer"]}
    judges = {(r.params["teacher"], r.params["student"]): r for r in by_stage["judge"]}
    metrics = []
    for key in (("teacher-a", "student-llama"), ("teacher-a", "student-qwen")):
        _finish(store, answers[key], t)
        _finish(store, judges[key], t + 60)
        metrics.append({"job_id": judges[key].id, "name": "win_rate", "step": None, "value": WIN[key], "time": t + 120})
        metrics.append({"job_id": judges[key].id, "name": "mean_length", "step": None, "value": 21.0, "time": t + 120})
    for r in by_stage["generate"]:
        metrics.append({"job_id": r.id, "name": "finished_fraction", "step": None, "value": 0.9, "time": t})
    with store.write() as s:
        record_metrics(s, metrics)
    with store.write() as s:  # skipped just now by the store's clock: pin them to the frozen one
        s.execute(update(Job).where(Job.status == JobStatus.skipped).values(finished_at=now - 100))
    ids["judge_first"] = by_stage["judge"][0].id
    return ids


def finish_judges(store: Store) -> None:
    """Every judge reports a win rate, as when the pipeline's last stage completes."""
    with store.read() as s:
        rows = queries.list_jobs(s, experiment="demo-car", newest_first=False)
    metrics = [{"job_id": r.id, "name": "win_rate", "step": None, "time": FROZEN,
                "value": WIN[(r.params["teacher"], r.params["student"])]}
               for r in rows if r.params.get("stage") == "judge"]
    with store.write() as s:
        record_metrics(s, metrics)
