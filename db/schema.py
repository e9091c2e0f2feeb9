"""The names the store's SQL is written with, in one place and importing only the standard library.

The tables themselves are created by `db.migrations` and mapped by `db.models`; every hand-written
statement (the read layer `db.reads`, the worker's per-tick polls, the ingest inserts) takes its
table and column lists and its status words from here, so a column change is made once: here and
in a migration. The status words come from the one `JobStatus` enum; `db.models` re-exports it.
"""

from __future__ import annotations

import enum


class JobStatus(str, enum.Enum):
    """Where a job is in its life. Every change between these goes through `db.queue`."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    interrupted = "interrupted"
    skipped = "skipped"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.interrupted, JobStatus.skipped}
)

# A retry makes a new job from one of these (pueue's "restart", Slurm's requeue).
RETRYABLE_STATUSES = frozenset({JobStatus.failed, JobStatus.cancelled, JobStatus.interrupted, JobStatus.skipped})

# Every status word, in lifecycle order: what `ls --status` and the app's `status:` filter accept.
STATUS_WORDS = tuple(s.value for s in JobStatus)
# Statuses of a job that has not finished: what `wait` and `logs -f` wait for.
LIVE_STATUSES = (JobStatus.queued.value, JobStatus.running.value)


class FailureReason(str, enum.Enum):
    """Why a job did not succeed, classified so that retry policies and filters can name it."""

    nonzero_exit = "nonzero_exit"
    signal = "signal"
    time_limit = "time_limit"
    cuda_oom = "cuda_oom"
    spawn_error = "spawn_error"
    bad_input = "bad_input"
    worker_lost = "worker_lost"
    dependency = "dependency"
    cancelled = "cancelled"
    node_fail = "node_fail"  # Slurm lost the job's node (NODE_FAIL, BOOT_FAIL): not the job's fault
    preempted = "preempted"  # Slurm preempted it for a higher-priority job


class UnknownJob(LookupError):
    """No job has this id."""


# Keys of the `setting` table (small key/value state shared by every process).
QUEUE_STATE_KEY = "queue_state"  # running | paused | draining
GPU_SNAPSHOT_KEY = "gpu_snapshot"  # the worker's latest GPU inventory, JSON
SLURM_PARTITIONS_KEY = "slurm_partitions"  # a Slurm worker's `sinfo`: partitions with idle/total GPUs, JSON
WORKER_STOP_KEY = "worker_stop"  # "<worker id>:graceful|now"
WORKER_GPUS_KEY = "worker_gpus"  # the --gpus of the last `labdeck worker start`

# The columns of `db.rows.JobRow`, in its field order (params last, as JSON text).
JOB_ROW_COLUMNS = (
    "job.id, experiment.name, job.name, job.kind, job.status, job.priority, job.gpus_requested, "
    "job.assigned_gpus, job.attempt, job.queued_at, job.started_at, job.finished_at, job.progress_done, "
    "job.progress_total, job.eta_s, job.failure_reason, job.params, job.slurm_job_id, job.slurm_state, "
    "job.slurm_reason, job.slurm_nodes"
)
JOB_ROW_FROM = "job JOIN experiment ON experiment.id = job.experiment_id"

# Jobs of archived experiments are left out of the default job lists (`labdeck ls`, the jobs screen);
# asked only when one is archived (ANY_ARCHIVED, a partial index), so lists pay nothing otherwise.
ANY_ARCHIVED = "SELECT 1 FROM experiment WHERE archived_at IS NOT NULL LIMIT 1"
NOT_ARCHIVED_JOB = "job.experiment_id NOT IN (SELECT id FROM experiment WHERE archived_at IS NOT NULL)"

# The columns of a job's detail beyond its row (`db.rows.JobDetail`).
JOB_DETAIL_COLUMNS = (
    "job.spec, job.run_dir, job.pid, job.host, job.exit_code, job.exit_signal, job.failure_detail, "
    "job.log_tail, job.heartbeat_at, job.cancel_requested, job.parent_id, job.events_skipped, job.events_note"
)

# The worker's per-tick reads (engine.worker): what the scheduler needs of each queued job.
QUEUED_FOR_SCHEDULER = (
    "SELECT id, priority, queued_at, gpus_requested, min_free_mem_mb, gpu_mem_mb, allow_foreign FROM job "
    f"WHERE status = '{JobStatus.queued.value}' AND cancel_requested = 0 ORDER BY priority DESC, id"
)
QUEUED_DEPENDENCIES = (
    "SELECT d.job_id, d.depends_on_id, up.status FROM jobdependency d "
    "JOIN job q ON q.id = d.job_id JOIN job up ON up.id = d.depends_on_id "
    f"WHERE q.status = '{JobStatus.queued.value}'"
)
RUNNING_CANCEL_REQUESTED = (
    f"SELECT id FROM job WHERE status = '{JobStatus.running.value}' AND cancel_requested = 1"
)
QUEUE_FINGERPRINT = (
    "SELECT count(*), max(id), total(priority * id) FROM job "
    f"WHERE status = '{JobStatus.queued.value}' AND cancel_requested = 0"
)

# What ingestion appends for a job process's events (engine.ingest).
METRIC_INSERT = "INSERT INTO metric (job_id, name, step, value, time) VALUES (?, ?, ?, ?, ?)"
ARTIFACT_INSERT = "INSERT INTO artifact (job_id, kind, path, meta, created_at) VALUES (?, ?, ?, ?, ?)"
