"""The experiments list as plain SQL on a sqlite3 connection: no SQLAlchemy import.

The experiments screen must paint as fast as the jobs screen, including when `e` is pressed before
the store (SQLAlchemy, SQLModel: about half a second of CPU on a small box) has finished
importing. So the list is written once, here, in the style of `db.reads`, and serves the app's
cold path (`tui.fastread`), `labdeck experiments` and, through a Session's own connection,
`db.experiments.experiment_rows`.

Order: most recently active first, without aggregating every job. Experiments with a running job
come first (the status index), then by their newest job (walking job ids downwards until the page
is full: a few thousand index entries at most), then those without jobs. With a filter, the
matching experiments are ordered by their newest job through the experiment_id index. Only the
page's experiments are aggregated (jobs by state, progress, GPUs in use, last activity).
"""

from __future__ import annotations

from typing import Any

from db.reads import _marks, as_connection
from db.rows import ExperimentRow
from db.schema import TERMINAL_STATUSES

# The order the screen lists states in (live ones first), a count column per state: every status word.
STATUS_ORDER = ("running", "queued", "succeeded", "failed", "cancelled", "interrupted", "skipped")
TERMINAL = tuple(sorted(s.value for s in TERMINAL_STATUSES))

_SUMMARY = (
    "SELECT experiment.id, experiment.name, experiment.description, experiment.created_at, experiment.archived_at, "
    "count(job.id), "
    + ", ".join(f"coalesce(sum(job.status = '{s}'), 0)" for s in STATUS_ORDER) + ", "
    f"coalesce(sum(CASE WHEN job.status IN ({', '.join(repr(s) for s in TERMINAL)}) THEN 1.0 "
    "WHEN job.status = 'running' AND job.progress_total > 0 "
    "THEN min(1.0, coalesce(job.progress_done, 0.0) / job.progress_total) ELSE 0.0 END), 0.0), "
    "coalesce(sum(CASE WHEN job.status = 'running' AND job.assigned_gpus != '' "
    "THEN length(job.assigned_gpus) - length(replace(job.assigned_gpus, ',', '')) + 1 ELSE 0 END), 0), "
    "coalesce(max(coalesce(job.finished_at, job.started_at, job.queued_at)), experiment.created_at) "
    "FROM experiment LEFT JOIN job ON job.experiment_id = experiment.id "
)


def page_order(c: Any, text: str | None, statuses: tuple[str, ...], offset: int, limit: int,
               archived: bool | None = False) -> tuple[list[int], int]:
    """Experiment ids of one page, most recently active first, and how many match. `archived`:
    False leaves archived experiments out, True keeps only them, None keeps all."""
    con = as_connection(c)
    running = list(dict.fromkeys(eid for (eid,) in con.execute(
        "SELECT experiment_id FROM job WHERE status = 'running' ORDER BY id DESC")))
    hidden: set[int] = set()
    if archived is False:
        hidden = {eid for (eid,) in con.execute("SELECT id FROM experiment WHERE archived_at IS NOT NULL")}
    if not text and not statuses and archived is not True:
        total = int(con.execute("SELECT count(*) FROM experiment").fetchone()[0]) - len(hidden)
        order = [e for e in running if e not in hidden]
        seen = set(order) | hidden
        want = offset + limit
        if len(order) < want:
            for (eid,) in con.execute("SELECT experiment_id FROM job ORDER BY id DESC"):
                if eid not in seen:
                    seen.add(eid)
                    order.append(eid)
                    if len(order) >= want:
                        break
        if len(order) < want:  # experiments without jobs, newest first
            order += [e for (e,) in con.execute("SELECT id FROM experiment ORDER BY id DESC")
                      if e not in seen][: want - len(order)]
        return order[offset:want], total
    where: list[str] = []
    args: list[Any] = []
    if archived is not None:
        where.append("archived_at IS NOT NULL" if archived else "archived_at IS NULL")
    if text:
        where.append("(name LIKE ? OR description LIKE ?)")
        args += [f"%{text}%"] * 2
    if statuses:
        where.append(f"id IN (SELECT experiment_id FROM job WHERE status IN ({_marks(statuses)}))")
        args += list(statuses)
    cands = "SELECT id FROM experiment" + (" WHERE " + " AND ".join(where) if where else "")
    newest = dict(con.execute(
        f"SELECT experiment_id, max(id) FROM job WHERE experiment_id IN ({cands}) GROUP BY experiment_id", args))
    ids = [eid for (eid,) in con.execute(cands, args)]
    rank = {e: i for i, e in enumerate(running)}
    ids.sort(key=lambda e: (rank.get(e, len(rank)), -newest.get(e, 0), -e))
    return ids[offset:offset + limit], len(ids)


def experiment_rows(c: Any, *, text: str | None = None, statuses: tuple[str, ...] = (), offset: int = 0,
                    limit: int = 100, archived: bool | None = False) -> tuple[list[ExperimentRow], int]:
    """A page of experiments (most recently active first) with their jobs aggregated for that page
    only, and how many match. `text` matches name or description; `statuses` keeps experiments
    having a job in one of them (`status:failed`: the ones to look at); archived ones are hidden
    unless `archived` says otherwise (see `page_order`)."""
    con = as_connection(c)
    page, total = page_order(con, text, statuses, offset, limit, archived)
    if not page:
        return [], total
    found = {}
    n_states = len(STATUS_ORDER)
    for r in con.execute(f"{_SUMMARY} WHERE experiment.id IN ({_marks(page)}) GROUP BY experiment.id", page):
        eid, name, desc, created, archived_at, n = r[:6]
        counts = {s: int(k) for s, k in zip(STATUS_ORDER, r[6:6 + n_states], strict=True) if k}
        done, gpus, last = r[6 + n_states:]
        found[eid] = ExperimentRow(name, desc or "", created, int(n), counts, (done / n) if n else None,
                                   int(gpus or 0), last, archived_at)
    return [found[e] for e in page if e in found], total
