"""Why a queued job waits, in words (Slurm's `Reason`): computed, never stored.

The inputs come from the store (`db.waiting.queue_view`: queued jobs, dependencies, running
jobs' GPUs, the worker's published GPU snapshot and the queue state); the rules are the worker's
own (`engine.scheduler.plan`, pure, torch-free), so the app says what the worker will do. A job
the plan would start now waits only for the worker's next round, or for a worker at all. The
composer uses `box_warning` to say, before queuing, that a job asks for more than the box has.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine import scheduler

WORKER_ROUND = "starts at the worker's next round"


def _gb(mb: float) -> str:
    return f"{mb / 1024:.0f} GB"


def gpu_need(gpus: int, min_free_mb: float = 0.0, share_mb: float = 0.0) -> str:
    need = max(min_free_mb, share_mb)
    return f"{gpus} GPU{'s' if gpus != 1 else ''}" + (f" with {_gb(need)} free" if need else "")


def box_warning(gpus: int, min_free_mb: float, share_mb: float, box: Iterable) -> str | None:  # noqa: ANN001 - GpuInfo
    """A warning when a job asks for more GPUs (or GPU memory) than the box has; None if it fits.

    `box` is the worker's latest GPU snapshot: an empty one means no GPU (or no worker yet)."""
    cards = list(box)
    if gpus <= 0:
        return None
    if not cards:
        return f"asks for {gpu_need(gpus, min_free_mb, share_mb)}; the box has no GPU that the worker reported, so it would wait"
    need = max(min_free_mb, share_mb)
    big = [g for g in cards if g.mem_total_mb >= need]
    if len(cards) < gpus:
        return f"asks for {gpu_need(gpus, min_free_mb, share_mb)}; the box has {len(cards)}, so it would wait forever"
    if len(big) < gpus:
        return f"asks for {gpu_need(gpus, min_free_mb, share_mb)}; only {len(big)} of the box's GPUs have that much memory"
    return None


def spec_warning(data: dict, overview) -> str | None:  # noqa: ANN001 - tui.source.Overview | None
    """`box_warning` for a validated spec mapping (the composer's), by the worker's last GPU snapshot."""
    if overview is None:
        return None
    try:
        gpus = int(data.get("gpus") or 0)
        free = float(data.get("min_free_mem_gb") or 0) * 1024
        share = float(data.get("share_gpu_mem_gb") or 0) * 1024
    except (TypeError, ValueError):
        return None
    return box_warning(gpus, free, share, overview.gpus)


def reasons(view, ids: Iterable[int] | None = None) -> dict[int, str]:  # noqa: ANN001, C901 - db.waiting.QueueView
    """{queued job id: why it has not started}, for `ids` (every queued job if None)."""
    want = None if ids is None else set(ids)
    queued = view.queued
    if want is not None and not any(q.id in want for q in queued) and not view.truncated:
        return {}
    by_id = {q.id: q for q in queued}
    allowed = [int(g) for g in view.worker.gpus.split(",") if g.strip().isdigit()] or None
    ours = {p.job_id for g in view.gpus for p in g.processes if p.job_id is not None}
    gpus = [
        scheduler.GpuView(g.index, g.mem_total_mb, g.mem_used_mb,
                          foreign=any(p.job_id is None for p in g.processes),
                          ours_mb={p.job_id: p.mem_mb for p in g.processes if p.job_id in ours})
        for g in view.gpus
    ]
    candidates = [scheduler.Candidate(q.id, q.priority, q.queued_at, q.gpus, q.min_free_mb, q.share_mb,
                                      q.allow_foreign, q.depends_on) for q in queued]
    succeeded = [i for i, (_n, st) in view.dependencies.items() if st == "succeeded"]
    running = [scheduler.Allocation(r.id, r.gpus, r.share_mb) for r in view.running if r.gpus]
    plan = scheduler.plan(candidates, gpus, running, succeeded=succeeded, allowed=allowed)
    usable = len([g for g in view.gpus if allowed is None or g.index in allowed])
    head = _queue_word(view)
    out: dict[int, str] = {}
    if want is not None and view.truncated:  # the page's jobs further back than the planned head
        back = want - set(by_id)
        out.update({i: f"{head + '; ' if head else ''}behind {len(queued):,}+ queued jobs" for i in back})
    for q in queued:
        if want is not None and q.id not in want:
            continue
        why = plan.waiting.get(q.id)
        if why is None:
            out[q.id] = head or WORKER_ROUND
            continue
        if why.startswith("after job "):
            dep = int(why.split()[2])
            name, status = view.dependencies.get(dep, ("", "queued"))
            why = f"waiting for job {dep} ({name}, {status})" if name else f"waiting for job {dep}"
        elif why.startswith("behind job "):
            other = by_id.get(int(why.split()[2].rstrip(",")))
            if other is not None and other.priority > q.priority:
                why = f"lower priority than job {other.id}, which waits for GPUs"
        elif q.gpus > usable:
            have = "none" if usable == 0 else str(usable)
            why = f"needs {gpu_need(q.gpus, q.min_free_mb, q.share_mb)}; the box has {have}"
        out[q.id] = f"{head}; {why}" if head else why
    return out


def _queue_word(view) -> str:  # noqa: ANN001
    w = view.worker
    if w.queue_state == "paused":
        return "queue paused"
    if w.queue_state == "draining":
        return "queue draining"
    if not w.online:
        return "no worker running"
    return ""


def short_reason(reason: str) -> str:
    """The jobs table's cell for a reason: `job 31`, `next round`, `GPUs busy`, `needs 2 GPUs; box has 1`."""
    parts = [p.strip() for p in reason.split(";")]
    out = []
    for p in parts:
        if p.startswith("waiting for job "):
            p = "job " + p.split()[3]
        elif p == WORKER_ROUND:
            p = "next round"
        elif p == "no worker running":
            p = "no worker"
        elif p.startswith("waiting for ") and "held by running jobs" in p:
            p = "GPUs busy"
        elif p.startswith("lower priority than job "):
            p = "after job " + p.split()[4].rstrip(",")
        elif p.startswith("the box has "):
            p = "box has " + p.removeprefix("the box has ")
        elif p.startswith("needs "):
            p = p.replace(" free", "")
        out.append(p)
    return "; ".join(out)
