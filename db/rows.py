"""The values the CLI and the TUI read, in plain frozen dataclasses with no SQLAlchemy behind them.

`db.queries` fills them through the store; `tui.fastread` fills the same types with plain sqlite3
while SQLAlchemy (half a second of CPU) is still being imported. Keeping them here, importing only
the standard library, lets both share one definition and one parser of the worker's GPU snapshot.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

# A worker that has not beaten for this long is shown as offline.
WORKER_STALE_S = 15.0


@dataclass(frozen=True)
class JobRow:
    id: int
    experiment: str
    name: str
    kind: str
    status: str
    priority: int
    gpus_requested: int
    assigned_gpus: str
    attempt: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    progress_done: float | None
    progress_total: float | None
    eta_s: float | None
    failure_reason: str | None
    params: dict[str, Any]
    slurm_job_id: str | None = None  # the Slurm side (`--executor slurm`); empty for local jobs
    slurm_state: str = ""
    slurm_reason: str = ""
    slurm_nodes: str = ""

    @property
    def shown_status(self) -> str:
        """The status as people read it: a job Slurm still holds shows as pending with Slurm's reason
        (Resources, Priority, QOSMaxGpu...), apart from labdeck's own queue (`queued`)."""
        if self.status == "running" and self.slurm_state and self.slurm_state != "RUNNING":
            reason = f" ({self.slurm_reason})" if self.slurm_reason else ""
            return f"{self.slurm_state.lower()}{reason}"
        return self.status

    @property
    def fraction(self) -> float | None:
        if self.progress_total and self.progress_done is not None:
            return max(0.0, min(1.0, self.progress_done / self.progress_total))
        return None

    def elapsed(self, now: float | None = None) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now or time.time()) - self.started_at

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "experiment": self.experiment, "name": self.name, "kind": self.kind,
            "status": self.status, "priority": self.priority, "gpus_requested": self.gpus_requested,
            "assigned_gpus": self.assigned_gpus, "attempt": self.attempt, "queued_at": self.queued_at,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "progress": {"done": self.progress_done, "total": self.progress_total, "eta_s": self.eta_s},
            "failure_reason": self.failure_reason, "params": self.params,
            "slurm_job_id": self.slurm_job_id, "slurm_state": self.slurm_state or None,
            "slurm_reason": self.slurm_reason or None, "slurm_nodes": self.slurm_nodes or None,
        }


@dataclass(frozen=True)
class WorkerState:
    online: bool
    pid: int | None
    host: str
    heartbeat_at: float | None
    state: str  # running | stopping | stopped | offline | none
    gpus: str
    queue_state: str  # running | paused | draining

    @classmethod
    def of(cls, row: tuple[Any, ...] | None, queue_state: str, now: float) -> WorkerState:
        """From the newest live worker row (pid, host, heartbeat_at, state, gpus), or None for no worker."""
        if row is None:
            return cls(False, None, "", None, "none", "", queue_state)
        pid, host, heartbeat_at, state, gpus = row
        online = now - heartbeat_at < WORKER_STALE_S
        return cls(online, pid, host, heartbeat_at, state if online else "offline", gpus, queue_state)


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    mem_mb: float
    job_id: int | None  # None: a process that is not ours (someone else's)
    name: str = ""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    mem_total_mb: float
    mem_used_mb: float
    util_pct: float | None
    processes: tuple[GpuProcess, ...] = ()

    @property
    def mem_free_mb(self) -> float:
        return max(0.0, self.mem_total_mb - self.mem_used_mb)


def parse_gpu_snapshot(raw: str | None) -> tuple[float | None, list[GpuInfo]]:
    """The worker's GPU snapshot (`engine.gpus.snapshot_json`) as (time taken, GPUs); (None, []) if none."""
    if not raw:
        return None, []
    data = json.loads(raw)
    gpus = [
        GpuInfo(
            g["index"], g.get("name", ""), g.get("mem_total_mb", 0.0), g.get("mem_used_mb", 0.0), g.get("util_pct"),
            tuple(GpuProcess(p["pid"], p.get("mem_mb", 0.0), p.get("job_id"), p.get("name", "")) for p in g.get("processes", [])),
        )
        for g in data.get("gpus", [])
    ]
    return data.get("t"), gpus


@dataclass(frozen=True)
class ArtifactRow:
    kind: str
    path: str
    meta: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class JobDetail:
    row: JobRow
    spec: dict[str, Any]
    run_dir: str
    pid: int | None
    host: str
    exit_code: int | None
    exit_signal: int | None
    failure_detail: str
    log_tail: str
    heartbeat_at: float | None
    cancel_requested: bool
    parent_id: int | None
    depends_on: list[int]
    metrics: dict[str, float]  # latest value of every metric
    artifacts: list[ArtifactRow] = field(default_factory=list)
    events_skipped: int = 0  # event lines ingestion could not use
    events_note: str = ""  # why the last of them were skipped

    def as_dict(self) -> dict[str, Any]:
        d = self.row.as_dict()
        d.update(
            spec=self.spec, run_dir=self.run_dir,
            log_path=f"{self.run_dir}/log.txt" if self.run_dir else None,
            pid=self.pid, host=self.host, exit_code=self.exit_code, exit_signal=self.exit_signal,
            failure_detail=self.failure_detail, log_tail=self.log_tail, heartbeat_at=self.heartbeat_at,
            cancel_requested=self.cancel_requested, parent_id=self.parent_id, depends_on=self.depends_on,
            metrics=self.metrics, events_skipped=self.events_skipped, events_note=self.events_note,
            artifacts=[{"kind": a.kind, "path": a.path, "meta": a.meta, "created_at": a.created_at} for a in self.artifacts],
            timestamps={"queued": self.row.queued_at, "started": self.row.started_at,
                        "finished": self.row.finished_at, "heartbeat": self.heartbeat_at},
        )
        return d


@dataclass(frozen=True)
class ResultRow:
    """One job as the results pivot sees it: identity, parameters, spec and one reduced metric."""

    id: int
    name: str
    kind: str
    status: str
    params: dict[str, Any]
    spec: dict[str, Any]
    value: float | None


@dataclass(frozen=True)
class ExperimentRow:
    """One experiment as the experiments screen and `labdeck experiments` list it."""

    name: str
    description: str
    created_at: float
    jobs: int
    counts: dict[str, int]  # jobs by status (only the statuses present)
    progress: float | None  # finished jobs plus running jobs' fractions, over all jobs
    gpus_in_use: int
    last_activity: float | None
    archived_at: float | None = None  # archived (hidden by default) since then

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "created_at": self.created_at,
                "jobs": self.jobs, "counts": self.counts, "progress": self.progress,
                "gpus_in_use": self.gpus_in_use, "last_activity": self.last_activity,
                "archived_at": self.archived_at}
