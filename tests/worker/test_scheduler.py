"""Placement rules of `engine.scheduler.plan`, including a property test that it never over-commits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.scheduler import Allocation, Candidate, GpuView, plan

GB = 1024


def gpus(n: int, total: float = 80 * GB) -> list[GpuView]:
    return [GpuView(i, total) for i in range(n)]


def started(p) -> dict[int, tuple[int, ...]]:  # noqa: ANN001
    return {s.job_id: s.gpus for s in p.starts}


def test_priority_then_id_never_the_wall_clock():
    """Ids only grow; `queued_at` comes from a wall clock that can step back, so it never decides."""
    cands = [Candidate(1, 0, 10.0, gpus=1), Candidate(2, 5, 20.0, gpus=1), Candidate(3, 0, 5.0, gpus=1),
             Candidate(4, 0, 5.0, gpus=1)]
    p = plan(cands, gpus(2))
    assert started(p) == {2: (0,), 1: (1,)}
    assert set(p.waiting) == {3, 4}


def test_cpu_jobs_need_no_gpu_and_respect_slots():
    cands = [Candidate(i, 0, float(i)) for i in range(1, 6)]
    assert len(plan(cands, []).starts) == 5
    p = plan(cands, [], cpu_slots=3, cpu_running=1)
    assert [s.job_id for s in p.starts] == [1, 2]
    assert "CPU job slots" in p.waiting[3]


def test_dependencies_wait_until_succeeded():
    cands = [Candidate(2, depends_on=(1,)), Candidate(3, depends_on=(1, 2))]
    p = plan(cands, [], succeeded=[1])
    assert started(p) == {2: ()}
    assert p.waiting[3] == "after job 2"


def test_whole_gpus_are_exclusive():
    running = [Allocation(9, (0,))]
    p = plan([Candidate(1, gpus=1), Candidate(2, gpus=1)], gpus(2), running, backfill=True)
    assert started(p) == {1: (1,)}
    assert "held by running jobs" in p.waiting[2]


def test_multi_gpu_job_gets_distinct_gpus():
    p = plan([Candidate(1, gpus=3)], gpus(4))
    assert len(set(started(p)[1])) == 3


def test_allowed_gpus_restrict_the_worker():
    p = plan([Candidate(1, gpus=1), Candidate(2, gpus=1), Candidate(3, gpus=1)], gpus(4), allowed=[0, 2],
             backfill=True)
    assert sorted(g for gs in started(p).values() for g in gs) == [0, 2]
    p = plan([Candidate(1, gpus=3)], gpus(4), allowed=[0, 2])
    assert p.waiting[1] == "needs 3 GPU(s), the worker has 2"


def test_foreign_processes_are_avoided_unless_allowed():
    views = [GpuView(0, 80 * GB, 10 * GB, foreign=True), GpuView(1, 80 * GB)]
    p = plan([Candidate(1, gpus=1), Candidate(2, gpus=1)], views)
    assert started(p) == {1: (1,)}
    assert "held by running jobs" in p.waiting[2]
    p = plan([Candidate(2, gpus=1)], views[:1])
    assert "without other users' processes" in p.waiting[2]
    p = plan([Candidate(1, gpus=1), Candidate(2, gpus=1, allow_foreign=True)], views)
    assert started(p) == {1: (1,), 2: (0,)}


def test_min_free_memory():
    views = [GpuView(0, 80 * GB, 70 * GB, foreign=True), GpuView(1, 80 * GB, 30 * GB, foreign=True)]
    p = plan([Candidate(1, gpus=1, min_free_mb=40 * GB, allow_foreign=True)], views)
    assert started(p) == {1: (1,)}
    p = plan([Candidate(1, gpus=1, min_free_mb=60 * GB, allow_foreign=True)], views)
    assert "other users hold too much memory" in p.waiting[1]


def test_sharing_packs_under_the_budget_and_never_overcommits():
    cands = [Candidate(i, queued_at=float(i), gpus=1, share_mb=30 * GB) for i in range(1, 6)]
    p = plan(cands, gpus(2), backfill=True)
    per_gpu: dict[int, list[int]] = {}
    for s in p.starts:
        per_gpu.setdefault(s.gpus[0], []).append(s.job_id)
    assert sorted(len(v) for v in per_gpu.values()) == [2, 2]  # 2 x 30 GB fit in 80 GB, 3 do not
    assert 5 in p.waiting
    # best fit: a second sharing job goes next to the first, leaving a whole card free
    p = plan([Candidate(1, gpus=1, share_mb=10 * GB), Candidate(2, gpus=1, share_mb=10 * GB)], gpus(2))
    assert started(p) == {1: (0,), 2: (0,)}


def test_sharing_never_lands_on_a_whole_gpu_job_and_vice_versa():
    running = [Allocation(8, (0,)), Allocation(9, (1,), share_mb=GB)]
    p = plan([Candidate(1, gpus=1, share_mb=GB), Candidate(2, gpus=1)], gpus(2), running, backfill=True)
    assert started(p) == {1: (1,)}
    assert 2 in p.waiting


def test_sharing_counts_what_a_job_really_uses_when_it_exceeds_its_budget():
    views = [GpuView(0, 80 * GB, 70 * GB, ours_mb={9: 70 * GB})]
    running = [Allocation(9, (0,), share_mb=10 * GB)]
    p = plan([Candidate(1, gpus=1, share_mb=20 * GB)], views, running)
    assert 1 in p.waiting


def test_a_waiting_gpu_job_keeps_its_place():
    """A 2-GPU job waiting for our own 1-GPU job is not overtaken by later 1-GPU jobs (no starvation)."""
    running = [Allocation(9, (0,))]
    cands = [Candidate(1, queued_at=1.0, gpus=2), Candidate(2, queued_at=2.0, gpus=1), Candidate(3, queued_at=3.0)]
    p = plan(cands, gpus(2), running)
    assert started(p) == {3: ()}  # the CPU job still runs
    assert p.waiting[2] == "behind job 1, which waits for GPUs"
    p = plan(cands, gpus(2), running, backfill=True)
    assert started(p) == {2: (1,), 3: ()}


def test_an_impossible_job_does_not_block_others():
    cands = [Candidate(1, queued_at=1.0, gpus=8), Candidate(2, queued_at=2.0, gpus=1)]
    p = plan(cands, gpus(2))
    assert started(p) == {2: (0,)}
    assert "the worker has 2" in p.waiting[1]


# ----------------------------------------------------------------------------- property

gpu_st = st.builds(
    lambda i, total, used_frac, foreign: (i, total, used_frac, foreign),
    st.integers(0, 7), st.sampled_from([16 * GB, 24 * GB, 80 * GB]), st.floats(0, 1), st.booleans(),
)
cand_st = st.builds(
    Candidate,
    id=st.integers(1, 10_000),
    priority=st.integers(-2, 2),
    queued_at=st.floats(0, 100),
    gpus=st.integers(0, 4),
    min_free_mb=st.sampled_from([0, 4 * GB, 20 * GB]),
    share_mb=st.sampled_from([0, 0, 2 * GB, 10 * GB, 30 * GB]),
    allow_foreign=st.booleans(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw_gpus=st.lists(gpu_st, max_size=6, unique_by=lambda g: g[0]),
    cands=st.lists(cand_st, max_size=25, unique_by=lambda c: c.id),
    n_running=st.integers(0, 6),
    allowed=st.one_of(st.none(), st.sets(st.integers(0, 7))),
    backfill=st.booleans(),
    data=st.data(),
)
def test_plans_never_overcommit(raw_gpus, cands, n_running, allowed, backfill, data):
    views = [GpuView(i, total, total * frac, foreign) for i, total, frac, foreign in raw_gpus]
    by_index = {v.index: v for v in views}
    # A valid starting state: our running jobs, each on existing GPUs, built by the planner itself.
    seed = [Candidate(100_000 + k, gpus=data.draw(st.integers(1, 2)), share_mb=data.draw(st.sampled_from([0, 5 * GB])),
                      allow_foreign=True) for k in range(n_running)]
    first = plan(seed, views, allowed=allowed, backfill=True)
    running = [Allocation(s.job_id, s.gpus, next(c.share_mb for c in seed if c.id == s.job_id)) for s in first.starts]
    p = plan(cands, views, running, allowed=allowed, backfill=backfill)
    by_id = {c.id: c for c in cands}
    allocs = running + [Allocation(s.job_id, s.gpus, by_id[s.job_id].share_mb) for s in p.starts]
    for s in p.starts:
        c = by_id[s.job_id]
        assert len(s.gpus) == c.gpus == len(set(s.gpus))
        for i in s.gpus:
            assert i in by_index
            assert allowed is None or i in allowed
            assert c.allow_foreign or not by_index[i].foreign
            assert by_index[i].free_mb >= c.min_free_mb
    for i, v in by_index.items():
        on = [a for a in allocs if i in a.gpus]
        if any(a.exclusive for a in on):
            assert len(on) == 1, f"GPU {i} holds a whole-GPU job and others: {on}"
        new_shared = [a for a in on if not a.exclusive and a in allocs[len(running):]]
        if new_shared:
            committed = sum(a.share_mb for a in on if not a.exclusive)
            assert committed + v.foreign_mb <= v.mem_total_mb + 1e-6, f"GPU {i} over-committed"
    assert set(p.waiting) | {s.job_id for s in p.starts} == set(by_id)
    assert not set(p.waiting) & {s.job_id for s in p.starts}
