"""The tables labdeck keeps in SQLite, as SQLModel classes.

The schema itself is created and evolved by the numbered steps in `db.migrations`; these classes
map onto it. A test checks that both agree, so a column added here without a migration fails CI.

Timestamps are Unix seconds (float, UTC): cheap to compare, sort and subtract, and what
`time.time()` gives every process on the box.
"""

from __future__ import annotations

from sqlmodel import Field, SQLModel

# The status words and failure reasons live in `db.schema` (no SQLAlchemy there), re-exported here.
from db.schema import (  # noqa: F401
    RETRYABLE_STATUSES,
    TERMINAL_STATUSES,
    FailureReason,
    JobStatus,
)


class Experiment(SQLModel, table=True):
    """A named group of jobs: the unit that results tables and exports are made over."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    description: str = ""
    created_at: float
    archived_at: float | None = None  # set by `labdeck archive`: hidden from lists, kept on disk


class Job(SQLModel, table=True):
    """One unit of work the worker runs as its own process."""

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiment.id", index=True)
    name: str
    kind: str = Field(index=True)
    spec: str  # the validated spec as JSON, exactly what the job process reads
    params: str = "{}"  # sweep point / pipeline matrix values as JSON: what results pivot over
    status: JobStatus = Field(default=JobStatus.queued, index=True)
    priority: int = 0
    gpus_requested: int = 0
    min_free_mem_mb: int = 0
    gpu_mem_mb: int = 0  # budget on a shared GPU; 0 means the job wants whole GPUs
    allow_foreign: bool = False
    time_limit_s: float | None = None
    retry_max: int = 0
    retry_on: str = "[]"  # JSON list of FailureReason values
    assigned_gpus: str = ""  # comma separated indices, as CUDA_VISIBLE_DEVICES gets them
    pid: int | None = None
    pid_start_time: float | None = None
    external_id: str = ""  # the executor's handle on the job's processes (engine.executors)
    events_inode: int = 0  # the events file the offset counts in
    events_skipped: int = 0  # event lines ingestion could not use (counted, skipped)
    events_note: str = ""  # why the last ones were skipped
    slurm_job_id: str | None = None  # set once sbatch accepted the job (`--executor slurm`)
    slurm_nodes: str = ""  # Slurm's node list, e.g. gpu[01-02]
    slurm_state: str = ""  # Slurm's state as squeue says it: PENDING, RUNNING, COMPLETED, NODE_FAIL...
    slurm_reason: str = ""  # why Slurm keeps it pending (Resources, Priority, QOSMaxGpu...) or ended it
    host: str = ""
    run_dir: str = ""
    attempt: int = 1
    parent_id: int | None = Field(default=None, foreign_key="job.id")
    cancel_requested: bool = False
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    failure_reason: str | None = None
    failure_detail: str = ""
    log_tail: str = ""
    events_offset: int = 0
    progress_done: float | None = None
    progress_total: float | None = None
    eta_s: float | None = None


class JobDependency(SQLModel, table=True):
    """`job_id` may start only once `depends_on_id` has succeeded."""

    job_id: int = Field(foreign_key="job.id", primary_key=True)
    depends_on_id: int = Field(foreign_key="job.id", primary_key=True, index=True)


class Metric(SQLModel, table=True):
    """One reported value. `step` is None for a job-level summary (a final score)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id")
    name: str
    step: int | None = None
    value: float
    time: float


class Artifact(SQLModel, table=True):
    """A file or folder a job produced (a model, an adapter, a records file)."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    kind: str
    path: str
    meta: str = "{}"
    created_at: float


class Worker(SQLModel, table=True):
    """The daemon that owns this home's GPUs; its heartbeat tells whether it is alive."""

    id: int | None = Field(default=None, primary_key=True)
    host: str
    pid: int
    pid_start_time: float
    started_at: float
    heartbeat_at: float
    stopped_at: float | None = None
    gpus: str = ""  # the GPU indices it may use, comma separated; "" is all it found
    state: str = "running"  # running | stopping | stopped


class Setting(SQLModel, table=True):
    """Small key/value state shared by the CLI, the TUI and the worker (queue paused, draining)."""

    key: str = Field(primary_key=True)
    value: str
