"""Every read the CLI and the app make, as plain SQL on a sqlite3 connection: no SQLAlchemy import.

Importing SQLAlchemy and SQLModel costs about half a second of CPU on a small shared box, twelve
times `labdeck --help`; `labdeck ls` must answer in a fraction of that. So the read side is written
once, here, with the names of `db.schema`, and serves three callers:

* the inspection commands (`ls`, `show`, `logs`, `results`, `worker status`), on a connection
  from `open_readonly()`, which never creates a home or migrates anything;
* the app's first screen (`tui.fastread`), before the store is open;
* `db.queries`, which re-exports these functions for code that holds a store session: a
  `Session` is accepted wherever a connection is, and its own connection (inside its transaction)
  is used.

Values come back as the frozen dataclasses of `db.rows`, never ORM objects.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from db.home import DB_NAME
from db.redact import redact
from db.rows import ArtifactRow, GpuInfo, JobDetail, JobRow, ResultRow, WorkerState, parse_gpu_snapshot
from db.schema import (
    ANY_ARCHIVED,
    GPU_SNAPSHOT_KEY,
    JOB_DETAIL_COLUMNS,
    JOB_ROW_COLUMNS,
    JOB_ROW_FROM,
    NOT_ARCHIVED_JOB,
    QUEUE_STATE_KEY,
    SLURM_PARTITIONS_KEY,
    UnknownJob,
)

BUSY_TIMEOUT_MS = 10_000
GROUP_PARAM = "group"
REDUCTIONS = ("last", "min", "max", "mean")


class NoHome(LookupError):
    """The folder named as a home holds no labdeck database."""


class StoreNeedsMigration(RuntimeError):
    """The database is older than this release: open the store (which migrates) instead."""


def open_readonly(home: Path) -> sqlite3.Connection:
    """A read-only connection on `home`'s database; NoHome if there is none. Creates nothing.

    The schema version is checked: an older database raises StoreNeedsMigration (the caller opens
    the store, which migrates), a newer one `db.migrations.SchemaTooNew`.
    """
    from db.migrations import SCHEMA_VERSION, SchemaTooNew

    path = Path(home) / DB_NAME
    if not path.is_file():
        raise NoHome(f"{home}: no labdeck home there (no {DB_NAME}); `labdeck submit` creates one")
    con = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        con.close()
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(f"{path}: schema version {version} is newer than this labdeck ({SCHEMA_VERSION}); upgrade labdeck")
        raise StoreNeedsMigration(str(path))
    return con


def as_connection(c: Any) -> sqlite3.Connection:
    """A sqlite3 connection, or a SQLAlchemy Session's own connection (after flushing what it holds)."""
    if isinstance(c, sqlite3.Connection):
        return c
    c.flush()
    return c.connection().connection.driver_connection


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


ROW_WIDTH = JOB_ROW_COLUMNS.count(",") + 1  # columns of a JobRow (the Slurm side included)


def _row(r: Sequence[Any]) -> JobRow:
    values = list(r[:ROW_WIDTH])
    values[16] = json.loads(values[16] or "{}")
    return JobRow(*values)


# ----------------------------------------------------------------------------- job lists

# Sort orders a job list can take; each ends with `id` so pages never overlap or skip a row.
JOB_SORTS = ("newest", "oldest", "queue", "status", "experiment", "kind", "name")
# Status order for the "status" sort: what needs attention first, finished work last.
_STATUS_RANK = {"running": 0, "queued": 1, "failed": 2, "interrupted": 3, "cancelled": 4, "skipped": 5, "succeeded": 6}
_ORDER = {
    "newest": "job.id DESC",
    "oldest": "job.id ASC",
    "queue": "job.priority DESC, job.id ASC",  # the order the worker starts queued jobs
    "status": "CASE job.status " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in _STATUS_RANK.items())
    + " ELSE 9 END, job.id DESC",
    "experiment": "experiment.name ASC, job.id DESC",
    "kind": "job.kind ASC, job.id DESC",
    "name": "job.name ASC, job.id DESC",
}


def any_archived(c: Any) -> bool:
    """Whether any experiment is archived (an index probe)."""
    return as_connection(c).execute(ANY_ARCHIVED).fetchone() is not None


def _filters(experiment: str | None, statuses: Sequence[str], kinds: Sequence[str],
             text: str | None, hide_archived: bool = False) -> tuple[list[str], list[Any]]:
    """WHERE clauses and their arguments; `hide_archived` (already checked with `any_archived`)
    leaves out archived experiments' jobs unless the experiment is named."""
    where: list[str] = []
    args: list[Any] = []
    if experiment:
        where.append("experiment.name = ?")
        args.append(experiment)
    elif hide_archived:
        where.append(NOT_ARCHIVED_JOB)
    if statuses:
        where.append(f"job.status IN ({_marks(statuses)})")
        args += list(statuses)
    if kinds:
        where.append(f"job.kind IN ({_marks(kinds)})")
        args += list(kinds)
    if text:
        where.append("(job.name LIKE ? OR experiment.name LIKE ? OR job.kind LIKE ? OR job.status LIKE ?)")
        args += [f"%{text}%"] * 4
    return where, args


def _where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def list_jobs(c: Any, *, experiment: str | None = None, statuses: Sequence[str] = (), kinds: Sequence[str] = (),
              text: str | None = None, limit: int | None = None, before_id: int | None = None,
              newest_first: bool = True, hide_archived: bool = False) -> list[JobRow]:
    """Jobs matching the filters. Keyset pagination: pass the last id seen as `before_id`.
    `hide_archived`: leave out archived experiments' jobs (what a person's list shows by default)."""
    where, args = _filters(experiment, statuses, kinds, text, hide_archived and any_archived(c))
    if before_id is not None:
        where.append("job.id < ?" if newest_first else "job.id > ?")
        args.append(before_id)
    sql = f"SELECT {JOB_ROW_COLUMNS} FROM {JOB_ROW_FROM}{_where(where)} ORDER BY job.id {'DESC' if newest_first else 'ASC'}"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [_row(r) for r in as_connection(c).execute(sql, args)]


def page_jobs(c: Any, *, experiment: str | None = None, statuses: Sequence[str] = (), kinds: Sequence[str] = (),
              text: str | None = None, sort: str = "newest", offset: int = 0, limit: int = 100,
              hide_archived: bool = False) -> tuple[list[JobRow], int]:
    """One page of the jobs matching the filters, in `sort` order, and how many match in all.

    Offset paging rather than keyset: any sort order works, page numbers are exact, and a deep
    page costs a walk along an index (a few milliseconds at 100,000 jobs), not a full scan.
    """
    if sort not in _ORDER:
        raise ValueError(f"sort: {sort!r} is not one of {', '.join(JOB_SORTS)}")
    con = as_connection(c)
    where, args = _filters(experiment, statuses, kinds, text, hide_archived and any_archived(con))
    rows = [_row(r) for r in con.execute(
        f"SELECT {JOB_ROW_COLUMNS} FROM {JOB_ROW_FROM}{_where(where)} ORDER BY {_ORDER[sort]} LIMIT ? OFFSET ?",
        [*args, limit, max(0, offset)])]
    # Without an experiment or text filter no join is needed: count from the status/kind indexes alone.
    source = JOB_ROW_FROM if (experiment or text) else "job"
    total = con.execute(f"SELECT count(*) FROM {source}{_where(where)}", args).fetchone()[0]
    return rows, int(total)


def offset_of(c: Any, job_id: int, sort: str, limit: int, hide_archived: bool = False) -> int:
    """The offset of the page where `job_id` shows in an unfiltered newest- or oldest-first list."""
    cmp = ">" if sort == "newest" else "<"
    hidden = f" AND {NOT_ARCHIVED_JOB}" if hide_archived and any_archived(c) else ""
    before = as_connection(c).execute(f"SELECT count(*) FROM job WHERE id {cmp} ?{hidden}", (job_id,)).fetchone()[0]
    return int(before) // limit * limit


def count_jobs(c: Any) -> dict[str, int]:
    return dict(as_connection(c).execute("SELECT status, count(*) FROM job GROUP BY status"))


def job_ids_exist(c: Any, ids: Sequence[int]) -> list[int]:
    """The ids among `ids` that do not exist."""
    if not ids:
        return []
    found = {r[0] for r in as_connection(c).execute(f"SELECT id FROM job WHERE id IN ({_marks(ids)})", list(ids))}
    return [i for i in ids if i not in found]


def job_names(c: Any, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(as_connection(c).execute(f"SELECT id, name FROM job WHERE id IN ({_marks(ids)})", list(ids)))


def job_priorities(c: Any, ids: Sequence[int]) -> dict[int, int]:
    if not ids:
        return {}
    return dict(as_connection(c).execute(f"SELECT id, priority FROM job WHERE id IN ({_marks(ids)})", list(ids)))


# ----------------------------------------------------------------------------- one job


def latest_metrics(c: Any, job_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """The most recent value (the latest row) of every metric of these jobs."""
    if not job_ids:
        return {}
    out: dict[int, dict[str, float]] = {}
    for job_id, name, value in as_connection(c).execute(
        "SELECT metric.job_id, metric.name, metric.value FROM metric JOIN ("
        "SELECT max(id) AS mid FROM metric "
        f"WHERE job_id IN ({_marks(job_ids)}) GROUP BY job_id, name) AS latest ON metric.id = latest.mid",
        list(job_ids),
    ):
        out.setdefault(job_id, {})[name] = value
    return out


def job_detail(c: Any, job_id: int) -> JobDetail:
    con = as_connection(c)
    r = con.execute(f"SELECT {JOB_ROW_COLUMNS}, {JOB_DETAIL_COLUMNS} FROM {JOB_ROW_FROM} WHERE job.id = ?",
                    (job_id,)).fetchone()
    if r is None:
        raise UnknownJob(f"job {job_id}: no such job")
    spec, run_dir, pid, host, exit_code, exit_signal, detail, tail, heartbeat, cancel, parent, skipped, note = r[ROW_WIDTH:]
    deps = sorted(d for (d,) in con.execute("SELECT depends_on_id FROM jobdependency WHERE job_id = ?", (job_id,)))
    arts = con.execute("SELECT kind, path, meta, created_at FROM artifact WHERE job_id = ? ORDER BY id", (job_id,))
    return JobDetail(
        row=_row(r[:ROW_WIDTH]), spec=redact(json.loads(spec)), run_dir=run_dir, pid=pid, host=host, exit_code=exit_code,
        exit_signal=exit_signal, failure_detail=detail, log_tail=tail, heartbeat_at=heartbeat,
        cancel_requested=bool(cancel), parent_id=parent, depends_on=deps,
        metrics=latest_metrics(con, [job_id]).get(job_id, {}),
        artifacts=[ArtifactRow(k, p, json.loads(m or "{}"), t) for k, p, m, t in arts],
        events_skipped=skipped, events_note=note,
    )


def metric_names(c: Any, job_id: int) -> list[str]:
    return [n for (n,) in as_connection(c).execute("SELECT DISTINCT name FROM metric WHERE job_id = ? ORDER BY name", (job_id,))]


def metric_series(c: Any, job_id: int, name: str, limit: int = 5000) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, oldest first; summaries without a step are left out.

    Long series are thinned to about `limit` points (every k-th row) so charts stay cheap.
    """
    rows = as_connection(c).execute(
        "SELECT step, value FROM metric WHERE job_id = ? AND name = ? AND step IS NOT NULL ORDER BY step, id",
        (job_id, name)).fetchall()
    if len(rows) > limit:
        rows = rows[:: -(-len(rows) // limit)]
    return [(int(s), float(v)) for s, v in rows]


def job_specs(c: Any, job_ids: Sequence[int]) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, name, spec) of these jobs, in the order given; unknown ids are left out."""
    if not job_ids:
        return []
    rows = {i: (i, n, json.loads(s)) for i, n, s in as_connection(c).execute(
        f"SELECT id, name, spec FROM job WHERE id IN ({_marks(job_ids)})", list(job_ids))}
    return [rows[i] for i in job_ids if i in rows]


def recent_specs(c: Any, limit: int = 300) -> list[dict[str, Any]]:
    """The specs of the newest jobs: what the New-job form suggests model and dataset paths from."""
    return [json.loads(s) for (s,) in as_connection(c).execute("SELECT spec FROM job ORDER BY id DESC LIMIT ?", (limit,))]


# ----------------------------------------------------------------------------- experiments and results


def experiments(c: Any) -> list[tuple[str, int]]:
    """(name, job count) for every experiment, newest first."""
    return [(n, k) for n, k in as_connection(c).execute(
        "SELECT experiment.name, count(job.id) FROM experiment LEFT OUTER JOIN job ON job.experiment_id = experiment.id "
        "GROUP BY experiment.id ORDER BY experiment.id DESC")]


def experiment_names(c: Any) -> list[str]:
    """Every experiment's name, newest first (no job counts: cheap at any size)."""
    return [n for (n,) in as_connection(c).execute("SELECT name FROM experiment ORDER BY id DESC")]


def experiment_metric_names(c: Any, experiment: str, summaries_only: bool = False) -> list[str]:
    """The metric names any job of `experiment` reported, sorted; with `summaries_only`, only those
    reported without a step (a job's final score, what a results table usually shows)."""
    return [n for (n,) in as_connection(c).execute(
        "SELECT DISTINCT metric.name FROM metric JOIN job ON job.id = metric.job_id "
        "JOIN experiment ON experiment.id = job.experiment_id WHERE experiment.name = ?"
        + (" AND metric.step IS NULL" if summaries_only else "") + " ORDER BY metric.name", (experiment,))]


def is_metric_pattern(metric: str) -> bool:
    """A metric name with one '*' stands for a family, e.g. 'auroc/*' (one per MMLU subject)."""
    return metric.count("*") == 1


def experiment_metric(c: Any, experiment: str, metric: str, reduce: str = "last") -> list[ResultRow]:
    """Every job of `experiment` with metric `metric` reduced over its rows (last/min/max/mean).

    A pattern with one '*' (`auroc/*`) gives one row per job and matching metric instead, the part the
    '*' matched in `params["group"]` and the metric's name in `params["metric"]`: the per-subject
    metrics of a score job with a `group_field` pivot as rows `group`. Jobs with no match give one
    row without a value (counted as missing).
    """
    con = as_connection(c)
    exp = con.execute("SELECT id FROM experiment WHERE name = ?", (experiment,)).fetchone()
    if exp is None:
        raise LookupError(f"experiment {experiment!r}: no such experiment")
    if reduce not in REDUCTIONS:
        raise ValueError(f"--reduce: {reduce!r} is not one of {', '.join(REDUCTIONS)}")
    jobs = con.execute("SELECT id, name, kind, status, params, spec FROM job WHERE experiment_id = ? ORDER BY id",
                       (exp[0],)).fetchall()
    if not is_metric_pattern(metric):
        values = _reduced(con, exp[0], "metric.name = ?", [metric], reduce)
        return [_result_row(job, values.get((job[0], metric))) for job in jobs]
    prefix, _, suffix = metric.partition("*")
    like = _like_literal(prefix) + "%" + _like_literal(suffix)
    by_job: dict[int, list[tuple[str, float | None]]] = {}
    for (job_id, name), v in sorted(_reduced(con, exp[0], "metric.name LIKE ? ESCAPE '\\'", [like], reduce).items()):
        if len(name) >= len(prefix) + len(suffix):  # LIKE's '%' may also match an overlap of prefix and suffix
            by_job.setdefault(job_id, []).append((name, v))
    out = []
    for job in jobs:
        matches = by_job.get(job[0], [])
        if not matches:
            out.append(_result_row(job, None))
        for name, v in matches:
            out.append(_result_row(job, v, {GROUP_PARAM: name[len(prefix): len(name) - len(suffix)], "metric": name}))
    return out


_AGG = {"min": "min(metric.value)", "max": "max(metric.value)", "mean": "avg(metric.value)", "last": "max(metric.id)"}


def _reduced(con: sqlite3.Connection, exp_id: int, name_filter: str, args: list[Any],
             reduce: str) -> dict[tuple[int, str], float | None]:
    """{(job id, metric name): value} over the experiment's metrics matching `name_filter`, reduced in SQL."""
    rows = con.execute(
        f"SELECT metric.job_id, metric.name, {_AGG[reduce]} FROM metric JOIN job ON job.id = metric.job_id "
        f"WHERE job.experiment_id = ? AND {name_filter} GROUP BY metric.job_id, metric.name", [exp_id, *args]).fetchall()
    if reduce != "last":
        return {(j, n): v for j, n, v in rows}
    ids = [v for *_, v in rows]
    last: dict[int, float] = {}
    for i in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
        part = ids[i: i + 500]
        last.update(con.execute(f"SELECT id, value FROM metric WHERE id IN ({_marks(part)})", part))
    return {(j, n): last.get(v) for j, n, v in rows}


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _result_row(job: Sequence[Any], value: float | None, extra: dict[str, Any] | None = None) -> ResultRow:
    jid, name, kind, status, params, spec = job
    return ResultRow(jid, name, kind, status, {**json.loads(params or "{}"), **(extra or {})}, redact(json.loads(spec)), value)


# ----------------------------------------------------------------------------- worker, queue and GPUs


def get_setting(c: Any, key: str, default: str = "") -> str:
    r = as_connection(c).execute("SELECT value FROM setting WHERE key = ?", (key,)).fetchone()
    return default if r is None else r[0]


def worker_state(c: Any, now: float | None = None) -> WorkerState:
    con = as_connection(c)
    w = con.execute("SELECT pid, host, heartbeat_at, state, gpus FROM worker WHERE stopped_at IS NULL "
                    "ORDER BY heartbeat_at DESC LIMIT 1").fetchone()
    return WorkerState.of(w, get_setting(con, QUEUE_STATE_KEY, "running"), now or time.time())


def gpu_snapshot(c: Any) -> tuple[float | None, list[GpuInfo]]:
    """The worker's latest GPU inventory (written every heartbeat) and when it was taken.

    The worker is the only process that talks to NVML; the CLI and the app read this row.
    """
    return parse_gpu_snapshot(get_setting(c, GPU_SNAPSHOT_KEY, ""))


def slurm_partitions(c: Any) -> list[dict[str, Any]]:
    """The cluster's partitions as the Slurm worker last saw them (`sinfo`): name, nodes, idle and
    total GPUs, node states. Empty without a Slurm worker."""
    try:
        data = json.loads(get_setting(c, SLURM_PARTITIONS_KEY, "") or "{}")
    except ValueError:
        return []
    parts = data.get("partitions") if isinstance(data, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def fingerprint(path: Path) -> tuple[int, ...]:
    """Changes whenever any process commits to the database at `path` (WAL size or mtime, database mtime)."""
    out: list[int] = []
    for p in (path, Path(f"{path}-wal")):
        try:
            st = os.stat(p)
            out += [st.st_mtime_ns, st.st_size]
        except FileNotFoundError:
            out += [0, 0]
    return tuple(out)


def latest_attempts(c: Any, job_ids: Sequence[int]) -> dict[int, tuple[int, str, str]]:
    """For each job, its newest attempt (a retry's retry...): {id: (newest id, its status, its name)}."""
    con = as_connection(c)
    newest_child: dict[int, int] = {}
    for child, parent in con.execute("SELECT id, parent_id FROM job WHERE parent_id IS NOT NULL"):
        newest_child[parent] = max(child, newest_child.get(parent, 0))
    newest = {}
    for i in job_ids:
        current = i
        while current in newest_child:
            current = newest_child[current]
        newest[i] = current
    wanted = sorted(set(newest.values()))
    info: dict[int, tuple[str, str]] = {}
    for k in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
        part = wanted[k: k + 500]
        info.update({i: (st, n) for i, st, n in con.execute(
            f"SELECT id, status, name FROM job WHERE id IN ({_marks(part)})", part)})
    return {i: (n, *info[n]) for i, n in newest.items() if n in info}
