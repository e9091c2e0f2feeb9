"""The read side for code that holds a store session: the plain-SQL reads of `db.reads`, re-exported.

Every function takes a SQLModel `Session` (or a plain sqlite3 connection) and returns frozen
dataclasses (`db.rows`), never ORM objects: widgets and commands get values, not live rows, so
nothing they hold can trigger a lazy load on the event loop or keep a transaction open. The SQL is
written once, in `db.reads`, so the fast paths that never import SQLAlchemy (`labdeck ls`, the
app's first screen) and the store give the same answers by construction.
"""

from __future__ import annotations

from db.reads import (  # noqa: F401 - the public read API
    GROUP_PARAM,
    JOB_SORTS,
    any_archived,
    count_jobs,
    experiment_metric,
    experiment_metric_names,
    experiment_names,
    experiments,
    gpu_snapshot,
    is_metric_pattern,
    job_detail,
    job_ids_exist,
    job_names,
    job_specs,
    latest_metrics,
    list_jobs,
    metric_names,
    metric_series,
    offset_of,
    page_jobs,
    recent_specs,
    slurm_partitions,
    worker_state,
)
from db.rows import ArtifactRow, GpuInfo, JobDetail, JobRow, ResultRow, WorkerState  # noqa: F401
from db.schema import GPU_SNAPSHOT_KEY, SLURM_PARTITIONS_KEY  # noqa: F401
