"""Which queued jobs start now, and on which GPUs: pure functions, no I/O.

The worker hands `plan()` plain values (the queued candidates, what runs, what the GPUs hold) and
gets back the jobs to start with their GPUs, plus a one-line reason for each job that waits. Being
pure is what lets the rules below be tested exhaustively (including a hypothesis property that no
plan ever over-commits a GPU) without a worker, a database or a GPU.

Rules, in order:

* Order: highest priority first, then lowest id (ids only grow; a wall-clock `queued_at` can step
  back with the clock, so it never decides the order).
* Dependencies: a job waits until every job it depends on has succeeded. (A dependency that
  failed makes the job `skipped`; that is a state transition, done by `db.queue`, not here.)
* GPUs: only the worker's allowed GPUs; a GPU with someone else's process is skipped unless the
  job allows foreign processes; a GPU must have at least `min_free_mb` free.
* Whole GPUs (`share_mb == 0`): a GPU holding any job of ours is not free.
* Sharing (`share_mb > 0`): several sharing jobs may sit on one GPU while the sum of their budgets
  (or what each really uses, if more), plus what other people use there, fits in the card's memory.
  Never on a GPU that one of our whole-GPU jobs holds. Best fit: the fullest GPU that still fits,
  so whole cards stay free for whole-GPU jobs.
* No starvation: a GPU job that cannot start only because our own jobs hold the GPUs it needs
  keeps its place; GPU jobs behind it wait too (CPU jobs do not). Without this a stream of 1-GPU
  jobs could keep a 2-GPU job waiting forever. A job that cannot start for other reasons (more
  GPUs than the worker has, foreign processes, too little free memory) does not hold others back.
  `backfill=True` turns this off (jobs behind may take what is free).
* CPU jobs (`gpus == 0`) run while fewer than `cpu_slots` CPU jobs run (None: no limit).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Candidate:
    """A queued job as the scheduler sees it."""

    id: int
    priority: int = 0
    queued_at: float = 0.0
    gpus: int = 0
    min_free_mb: float = 0.0
    share_mb: float = 0.0  # > 0: may share a GPU, counting this much memory against it
    allow_foreign: bool = False
    depends_on: tuple[int, ...] = ()

    @property
    def order(self) -> tuple[int, int]:
        return (-self.priority, self.id)


@dataclass(frozen=True)
class GpuView:
    """One GPU: its memory as measured, whether someone else uses it, and what each of our jobs uses."""

    index: int
    mem_total_mb: float
    mem_used_mb: float = 0.0
    foreign: bool = False  # a process that is not ours runs on it
    ours_mb: Mapping[int, float] = field(default_factory=dict)  # job id -> measured MB on this GPU

    @property
    def free_mb(self) -> float:
        return max(0.0, self.mem_total_mb - self.mem_used_mb)

    @property
    def foreign_mb(self) -> float:
        """Memory in use that none of our jobs explains (other people, drivers, contexts)."""
        return max(0.0, self.mem_used_mb - sum(self.ours_mb.values()))


@dataclass(frozen=True)
class Allocation:
    """A running job of ours and the GPUs it holds."""

    job_id: int
    gpus: tuple[int, ...]
    share_mb: float = 0.0  # 0: whole GPUs

    @property
    def exclusive(self) -> bool:
        return self.share_mb <= 0


@dataclass(frozen=True)
class Start:
    job_id: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    starts: list[Start]
    waiting: dict[int, str]  # job id -> why it does not start now


class _GpuState:
    """Mutable per-GPU bookkeeping while one plan is built."""

    def __init__(self, view: GpuView) -> None:
        self.view = view
        self.exclusive_jobs: list[int] = []
        self.shared: dict[int, float] = {}  # job id -> budget

    @property
    def has_ours(self) -> bool:
        return bool(self.exclusive_jobs or self.shared)

    def committed_mb(self) -> float:
        """What our sharing jobs may use here: each its budget, or more if it already uses more."""
        return sum(max(budget, self.view.ours_mb.get(j, 0.0)) for j, budget in self.shared.items())

    def shareable_mb(self) -> float:
        """Memory a new sharing job may count on: total - others' use - our commitments."""
        return self.view.mem_total_mb - self.view.foreign_mb - self.committed_mb()


def _build_state(gpus: Sequence[GpuView], running: Iterable[Allocation]) -> dict[int, _GpuState]:
    state = {g.index: _GpuState(g) for g in gpus}
    for a in running:
        for i in a.gpus:
            s = state.get(i)
            if s is None:  # a GPU that vanished from the inventory: nothing to place there anyway
                continue
            if a.exclusive:
                s.exclusive_jobs.append(a.job_id)
            else:
                s.shared[a.job_id] = a.share_mb
    return state


def _eligible(c: Candidate, s: _GpuState, allowed: frozenset[int] | None) -> bool:
    if allowed is not None and s.view.index not in allowed:
        return False
    return not (s.view.foreign and not c.allow_foreign)


def _fits(c: Candidate, s: _GpuState) -> bool:
    if s.exclusive_jobs:
        return False
    if c.share_mb <= 0:
        return not s.shared and s.view.free_mb >= c.min_free_mb
    return s.shareable_mb() >= max(c.share_mb, c.min_free_mb) and s.view.free_mb >= c.min_free_mb


def _place(c: Candidate, state: Mapping[int, _GpuState], allowed: frozenset[int] | None) -> tuple[int, ...] | None:
    fitting = [s for s in state.values() if _eligible(c, s, allowed) and _fits(c, s)]
    if len(fitting) < c.gpus:
        return None
    if c.share_mb > 0:
        fitting.sort(key=lambda s: (s.shareable_mb(), s.view.index))  # best fit
    else:
        fitting.sort(key=lambda s: (-s.view.free_mb, s.view.index))
    return tuple(sorted(s.view.index for s in fitting[: c.gpus]))


def _why_not(c: Candidate, state: Mapping[int, _GpuState], allowed: frozenset[int] | None) -> tuple[str, bool]:
    """(reason, blocked only by our own jobs)."""
    usable = [s for s in state.values() if allowed is None or s.view.index in allowed]
    if len(usable) < c.gpus:
        return f"needs {c.gpus} GPU(s), the worker has {len(usable)}", False
    clean = [s for s in usable if not (s.view.foreign and not c.allow_foreign)]
    if len(clean) < c.gpus:
        return f"needs {c.gpus} GPU(s) without other users' processes, {len(clean)} are", False
    # Would it fit if none of our jobs ran? Then it only waits for us, and keeps its place.
    empty = {i: _GpuState(GpuView(s.view.index, s.view.mem_total_mb, s.view.foreign_mb, s.view.foreign)) for i, s in state.items()}
    if _place(c, empty, allowed) is None:
        need = max(c.share_mb, c.min_free_mb)
        return f"needs {c.gpus} GPU(s) with {need:.0f} MB free; other users hold too much memory", False
    return f"waiting for {c.gpus} GPU(s) held by running jobs", True


def plan(
    candidates: Iterable[Candidate],
    gpus: Sequence[GpuView],
    running: Iterable[Allocation] = (),
    *,
    succeeded: Iterable[int] = (),
    allowed: Iterable[int] | None = None,
    cpu_slots: int | None = None,
    cpu_running: int = 0,
    backfill: bool = False,
) -> Plan:
    """Decide which candidates start now and on which GPUs (see the module docstring for the rules)."""
    done = set(succeeded)
    allowed_set = frozenset(allowed) if allowed is not None else None
    state = _build_state(gpus, running)
    cpu_free = None if cpu_slots is None else max(0, cpu_slots - cpu_running)
    starts: list[Start] = []
    waiting: dict[int, str] = {}
    gpu_blocked_by: int | None = None
    # Jobs of the same shape that failed to place fail again until something is placed: with
    # thousands of queued sweep points this keeps a round linear in the queue, not in queue x GPUs.
    unplaceable: dict[tuple[int, float, float, bool], tuple[str, bool]] = {}
    for c in sorted(candidates, key=lambda c: c.order):
        missing = [d for d in c.depends_on if d not in done]
        if missing:
            waiting[c.id] = f"after job {missing[0]}"
            continue
        if c.gpus <= 0:
            if cpu_free is not None and cpu_free <= 0:
                waiting[c.id] = f"all {cpu_slots} CPU job slots are busy"
                continue
            if cpu_free is not None:
                cpu_free -= 1
            starts.append(Start(c.id, ()))
            continue
        if gpu_blocked_by is not None:
            waiting[c.id] = f"behind job {gpu_blocked_by}, which waits for GPUs"
            continue
        shape = (c.gpus, c.min_free_mb, c.share_mb, c.allow_foreign)
        known = unplaceable.get(shape)
        chosen = None if known else _place(c, state, allowed_set)
        if chosen is None:
            reason, ours_only = known or _why_not(c, state, allowed_set)
            unplaceable[shape] = (reason, ours_only)
            waiting[c.id] = reason
            if ours_only and not backfill:
                gpu_blocked_by = c.id
            continue
        unplaceable.clear()
        for i in chosen:
            if c.share_mb > 0:
                state[i].shared[c.id] = c.share_mb
            else:
                state[i].exclusive_jobs.append(c.id)
        starts.append(Start(c.id, chosen))
    return Plan(starts, waiting)
