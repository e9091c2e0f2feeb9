"""The job lifecycle table: every allowed transition works, every other one is refused and changes nothing."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from db.home import run_dir
from db.models import Job, JobDependency, JobStatus
from db.queue import (
    ALLOWED_FROM,
    IllegalTransition,
    JobDraft,
    UnknownJob,
    claim,
    delete_jobs,
    enqueue,
    request_cancel,
    retry,
    retry_with_dependents,
    skip_dependents_of_failed,
    transition,
)

S = JobStatus
EXPECTED_ALLOWED = {
    (S.queued, S.running), (S.queued, S.cancelled), (S.queued, S.skipped), (S.queued, S.failed),
    (S.running, S.succeeded), (S.running, S.failed), (S.running, S.cancelled), (S.running, S.interrupted),
}


def _draft(name: str = "j", **kw) -> JobDraft:
    return JobDraft(experiment="exp", name=name, kind="command", spec={"kind": "command"}, **kw)


def _put(store, status: JobStatus) -> int:
    """A job forced into `status` (setup only; real code goes through the transitions)."""
    with store.write() as s:
        (job_id,) = enqueue(s, [_draft()])
        s.get(Job, job_id).status = status
    return job_id


def _status(store, job_id: int) -> JobStatus:
    with store.read() as s:
        return JobStatus(s.execute(select(Job.status).where(Job.id == job_id)).scalar_one())


def test_the_table_is_exactly_the_documented_lifecycle() -> None:
    actual = {(src, dst) for dst, srcs in ALLOWED_FROM.items() for src in srcs}
    assert actual == EXPECTED_ALLOWED


@pytest.mark.parametrize("src,dst", list(itertools.product(S, S)))
def test_every_transition(store, src: JobStatus, dst: JobStatus) -> None:
    job_id = _put(store, src)
    if (src, dst) in EXPECTED_ALLOWED:
        with store.write() as s:
            transition(s, job_id, dst)
        assert _status(store, job_id) is dst
        with store.read() as s:
            job = s.get(Job, job_id)
            assert (job.finished_at is not None) == dst.is_terminal
    else:
        with pytest.raises(IllegalTransition, match=f"job {job_id}"):
            with store.write() as s:
                transition(s, job_id, dst)
        assert _status(store, job_id) is src


def test_transition_of_unknown_job(store) -> None:
    with pytest.raises(UnknownJob, match="job 999"):
        with store.write() as s:
            transition(s, 999, S.running)


def test_claim_only_queued_and_records_start(store) -> None:
    job_id = _put(store, S.queued)
    with store.write() as s:
        assert claim(s, job_id, gpus=[0, 2], host="box", run_dir="/r")
    with store.write() as s:
        assert not claim(s, job_id)
    with store.read() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.assigned_gpus, job.host) == (S.running, "0,2", "box")
        assert job.started_at is not None and job.started_at >= job.queued_at


def test_cancel_queued_is_immediate_running_is_a_flag(store) -> None:
    q = _put(store, S.queued)
    r = _put(store, S.running)
    done = _put(store, S.succeeded)
    with store.write() as s:
        assert request_cancel(s, q) is S.cancelled
        assert request_cancel(s, r) is S.running
        assert request_cancel(s, done) is S.succeeded
    with store.read() as s:
        assert s.get(Job, q).status is S.cancelled
        assert s.get(Job, r).cancel_requested
        assert s.get(Job, done).status is S.succeeded


def test_cancel_flag_prevents_claim(store) -> None:
    job_id = _put(store, S.queued)
    with store.write() as s:
        s.get(Job, job_id).cancel_requested = True
    with store.write() as s:
        assert not claim(s, job_id)


@pytest.mark.parametrize("status", [S.failed, S.cancelled, S.interrupted, S.skipped])
def test_retry_makes_a_linked_new_attempt(store, status: JobStatus) -> None:
    with store.write() as s:
        up, down = enqueue(s, [_draft("up"), _draft("down", depends_on=(0,))])
        s.get(Job, down).status = status
    with store.write() as s:
        new = retry(s, down)
    with store.read() as s:
        job = s.get(Job, new)
        assert (job.status, job.attempt, job.parent_id, job.name) == (S.queued, 2, down, "down")
    from db.queries import job_detail

    with store.read() as s:
        assert job_detail(s, new).depends_on == [up]


@pytest.mark.parametrize("status", [S.queued, S.running, S.succeeded])
def test_retry_refused_for_live_or_good_jobs(store, status: JobStatus) -> None:
    job_id = _put(store, status)
    with pytest.raises(IllegalTransition):
        with store.write() as s:
            retry(s, job_id)


def test_failed_dependency_skips_the_whole_chain(store) -> None:
    with store.write() as s:
        a, b, c, other = enqueue(s, [_draft("a"), _draft("b", depends_on=(0,)), _draft("c", depends_on=(1,)), _draft("x")])
        s.get(Job, a).status = S.failed
    with store.write() as s:
        skipped = skip_dependents_of_failed(s)
    assert sorted(skipped) == [b, c]
    with store.read() as s:
        jb = s.get(Job, b)
        assert jb.status is S.skipped and f"job {a} (a)" in jb.failure_detail
        assert s.get(Job, other).status is S.queued


def _deps(s, job_id: int) -> list[int]:
    return sorted(s.execute(select(JobDependency.depends_on_id).where(JobDependency.job_id == job_id)).scalars())


def test_retry_with_dependents_brings_back_the_skipped_chain(store) -> None:
    with store.write() as s:
        a, b, c, other = enqueue(s, [_draft("a"), _draft("b", depends_on=(0,)), _draft("c", depends_on=(1,)), _draft("x")])
        s.get(Job, a).status = S.failed
        s.get(Job, other).status = S.failed
    with store.write() as s:
        skip_dependents_of_failed(s)
    with store.write() as s:
        mapping = retry_with_dependents(s, a)
    assert list(mapping) == [a, b, c]
    with store.read() as s:
        assert all(s.get(Job, new).status is S.queued for new in mapping.values())
        assert _deps(s, mapping[b]) == [mapping[a]] and _deps(s, mapping[c]) == [mapping[b]]
        assert s.get(Job, b).status is S.skipped, "the old attempts stay as they ended"
        assert s.get(Job, other).status is S.failed


def test_a_retried_stage_dependents_read_the_new_attempts_outputs(store) -> None:
    """A stage's spec names its upstream by id; after a retry it resolves to the new run's folder,
    and the stored spec text is never rewritten."""
    import json

    from db import stagerefs

    home = store.home

    def resolve(i: int, spec: dict, ids: list[int]) -> dict:
        if i == 0:
            return spec
        return {**spec, "records": stagerefs.marker(ids[0], "output"), "folder": stagerefs.marker(ids[0], "run_dir"),
                "near": f"{run_dir(home, ids[0])}0/outputs"}

    with store.write() as s:
        up, down = enqueue(s, [_draft("up"), _draft("down", depends_on=(0,))], resolve=resolve)
        s.get(Job, up).status = S.failed
        before = s.get(Job, down).spec
    with store.write() as s:
        new = retry(s, up)
    with store.read() as s:
        assert _deps(s, down) == [new]
        assert s.get(Job, down).spec == before, "no text rewriting"
        spec = stagerefs.resolve(s, home, down, s.get(Job, down).spec, {"command": "outputs/records.jsonl"})
    assert spec["records"] == f"{run_dir(home, new)}/outputs/records.jsonl"
    assert spec["folder"] == str(run_dir(home, new))
    assert spec["near"] == f"{run_dir(home, up)}0/outputs", "another job's folder that shares a prefix is left alone"
    assert json.loads(before)["records"] == f"${{job:{up}.output}}"


def test_delete_refuses_a_job_that_a_queued_stage_still_needs(store) -> None:
    with store.write() as s:
        up, down, done = enqueue(s, [_draft("up"), _draft("down", depends_on=(0,)), _draft("done")])
        s.get(Job, up).status = S.succeeded
        s.get(Job, done).status = S.failed
    with pytest.raises(IllegalTransition, match=f"job {up}: job {down} still waits for it"):
        with store.write() as s:
            delete_jobs(s, [up, done])
    with store.write() as s:
        assert delete_jobs(s, [done]) == [done]
    with store.read() as s:
        assert s.get(Job, up) is not None and s.get(Job, done) is None
