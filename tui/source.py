"""The app's data source: every read and write the terminal app makes, as plain blocking functions.

The app receives a `Source` (memray's pattern): `run_app` builds one on the user's home, tests
build one on a temporary home with a frozen clock, or a fake. Screens call these methods only
from thread workers, never on the event loop, and get back frozen values (`db.queries`
dataclasses and the small ones below), never ORM objects.

Nothing here imports Textual. The store (SQLAlchemy, sqlmodel) is imported and opened on first
use, inside the first worker thread, so the first frame is painted before that cost is paid.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client import ClientError
from db.schema import STATUS_WORDS  # noqa: F401 - stdlib only; the app's `status:` words
from tui.source_experiments import ExperimentSource
from tui.source_results import (  # noqa: F401 - re-exported: screens and tests import them from here
    ResultsData,
    ResultsSource,
    family_fields,
    flatten,
    metric_families,
    varying_fields,
)

if TYPE_CHECKING:  # pragma: no cover
    from db.queries import GpuInfo, JobDetail, JobRow, WorkerState
    from db.session import Store

Clock = Callable[[], float]

PAGE_SIZE = 100
LOG_FIRST_BYTES = 64 * 1024  # a log opened for the first time shows its last 64 KiB
LOG_CHUNK_BYTES = 256 * 1024  # at most this much new log per read
KIND_WORDS = ("command", "generate", "score", "finetune", "merge")
REDUCTIONS = ("last", "min", "max", "mean")

# -------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class JobQuery:
    """What the jobs table shows: filters and a sort order.

    The text filter understands `status:running`, `kind:finetune` and `exp:NAME` (also `s:`, `k:`,
    `e:`); what is left matches name, experiment, kind or status.
    """

    text: str = ""
    experiment: str | None = None
    statuses: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    sort: str = "newest"

    @classmethod
    def parse(cls, raw: str, sort: str = "newest", experiment: str | None = None) -> JobQuery:
        statuses: list[str] = []
        kinds: list[str] = []
        words: list[str] = []
        try:
            tokens = shlex.split(raw)
        except ValueError:
            tokens = raw.split()
        for tok in tokens:
            key, sep, value = tok.partition(":")
            key = key.lower()
            if sep and value and key in ("status", "s"):
                statuses += [v for v in value.split(",") if v]
            elif sep and value and key in ("kind", "k"):
                kinds += [v for v in value.split(",") if v]
            elif sep and value and key in ("exp", "e", "experiment"):
                experiment = value
            else:
                words.append(tok)
        return cls(" ".join(words), experiment, tuple(statuses), tuple(kinds), sort)

    def describe(self) -> str:
        parts = []
        if self.experiment:
            parts.append(f"exp:{self.experiment}")
        if self.statuses:
            parts.append("status:" + ",".join(self.statuses))
        if self.kinds:
            parts.append("kind:" + ",".join(self.kinds))
        if self.text:
            parts.append(repr(self.text))
        return " ".join(parts)

    @property
    def filtered(self) -> bool:
        return bool(self.text or self.experiment or self.statuses or self.kinds)


@dataclass(frozen=True)
class JobsPage:
    query: JobQuery
    offset: int
    rows: tuple[JobRow, ...]
    total: int
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)  # queued job id -> why it waits (tui.waiting)
    archived_hidden: bool = False  # jobs of archived experiments are left out of this page


@dataclass(frozen=True)
class Overview:
    """The always-visible state: worker, queue, GPU summary, job counts, experiments."""

    worker: WorkerState
    gpus_at: float | None
    gpus: tuple[GpuInfo, ...]
    counts: dict[str, int]
    experiments: tuple[str, ...]


@dataclass(frozen=True)
class DetailData:
    detail: JobDetail
    gpus: tuple[GpuInfo, ...]  # the job's assigned GPUs, from the worker's latest snapshot
    metric_names: tuple[str, ...]
    job_names: dict[int, str] = field(default_factory=dict)
    waiting: str | None = None  # why it has not started, while queued
    upstream: tuple = ()  # db.experiments.Linked: the jobs it read from
    downstream: tuple = ()  # the jobs that read its outputs


@dataclass(frozen=True)
class LogChunk:
    path: str
    lines: tuple[str, ...]
    offset: int
    reset: bool = False  # the file shrank or was replaced: clear what is shown


@dataclass(frozen=True)
class GpuData:
    at: float | None
    gpus: tuple[GpuInfo, ...]
    job_names: dict[int, str]
    partitions: tuple[dict[str, Any], ...] = ()  # a Slurm worker's `sinfo` (empty on one box)


# An action the store refused (an illegal transition, an unknown job): shown as a notice. The
# client layer raises it, for the CLI and the app alike.
ActionError = ClientError


# -------------------------------------------------------------------------------- helpers


# -------------------------------------------------------------------------------- the source


class Source(ExperimentSource, ResultsSource):
    """Reads and writes for the app, on one labdeck home. Thread-safe; every method blocks.

    Whole-experiment reads and writes (experiments list, pipeline) live in `tui.source_experiments`."""

    def __init__(self, home: Path | str | None = None, *, store: Store | None = None, clock: Clock = time.time) -> None:
        from client import Client

        self._home = home
        self.client = Client(home, store=store)  # every write goes through the one client layer
        self.clock = clock

    # The store is opened on first use, in whichever worker thread gets there first.
    @property
    def store(self) -> Store:
        return self.client.store

    @property
    def home(self) -> Path:
        return self.store.home

    @property
    def open_home(self) -> Path | None:
        """The home once the store is open, else None (never opens it: for display only)."""
        return self.client.store.home if self.client.is_open else None

    def db_path(self) -> Path:
        """The database file, without opening the store (no SQLAlchemy import)."""
        if self.client.is_open:
            return self.store.path
        from db.home import db_path, ensure_home

        return db_path(ensure_home(self._home))

    @property
    def cold(self) -> bool:
        """True until the store is open: reads that can go through `tui.fastread` do."""
        return not self.client.is_open

    def warm_up(self) -> None:
        """Import and open the store (and migrate it if needed) ahead of the first real need, and
        run the common reads once so SQLAlchemy's statement caches are warm for the first key press."""
        _ = self.store
        self.jobs_page(JobQuery(), PAGE_SIZE)
        self.overview()

    def fingerprint(self) -> tuple[int, ...]:
        """Changes whenever any process commits to the database (WAL size or mtime, database mtime)."""
        from db.reads import fingerprint

        return fingerprint(self.db_path())

    # ---------------------------------------------------------------- reads

    def overview(self) -> Overview:
        if self.cold:
            from tui import fastread

            fast = fastread.overview(self.db_path(), self.clock())
            if fast is not None:
                worker, at, gpus, counts, exps = fast
                return Overview(worker, at, tuple(gpus), counts, tuple(exps))  # type: ignore[arg-type]
        from db import queries as Q

        with self.store.read() as s:
            worker = Q.worker_state(s, now=self.clock())
            t, gpus = Q.gpu_snapshot(s)
            counts = Q.count_jobs(s)
            exps = Q.experiment_names(s)
        return Overview(worker, t, tuple(gpus), counts, tuple(exps))

    def jobs_page(self, query: JobQuery, offset: int = 0, limit: int = PAGE_SIZE) -> JobsPage:
        if self.cold and offset == 0 and query == JobQuery():
            from tui import fastread

            fast = fastread.first_page(self.db_path(), limit)
            if fast is not None:
                rows, total, metrics = fast
                return JobsPage(query, 0, tuple(rows), total, metrics)  # type: ignore[arg-type]
        from db import queries as Q

        with self.store.read() as s:
            rows, total = Q.page_jobs(
                s, experiment=query.experiment, statuses=query.statuses, kinds=query.kinds,
                text=query.text or None, sort=query.sort, offset=offset, limit=limit, hide_archived=True,
            )
            if not rows and offset > 0 and total > 0:  # the page emptied (jobs filtered away): show the last one
                offset = max(0, (total - 1) // limit * limit)
                rows, total = Q.page_jobs(
                    s, experiment=query.experiment, statuses=query.statuses, kinds=query.kinds,
                    text=query.text or None, sort=query.sort, offset=offset, limit=limit, hide_archived=True,
                )
            metrics = Q.latest_metrics(s, [r.id for r in rows])
            reasons = self.waiting_reasons(s, [r.id for r in rows if r.status == "queued"])
            hidden = not query.experiment and Q.any_archived(s)
        return JobsPage(query, offset, tuple(rows), total, metrics, reasons, hidden)

    def offset_of(self, query: JobQuery, job_id: int, limit: int = PAGE_SIZE) -> int | None:
        """The page offset where `job_id` shows under `query` (newest first), or None if it does not."""
        from db import queries as Q

        if query.sort not in ("newest", "oldest") or query.filtered:
            return None
        with self.store.read() as s:
            return Q.offset_of(s, job_id, query.sort, limit, hide_archived=True)

    def detail(self, job_id: int) -> DetailData:
        from db import queries as Q
        from db.queue import UnknownJob

        try:
            with self.store.read() as s:
                d = Q.job_detail(s, job_id)
                _, gpus = Q.gpu_snapshot(s)
                names = Q.metric_names(s, job_id)
                waiting = self.waiting_reasons(s, [job_id]).get(job_id) if d.row.status == "queued" else None
                from db.experiments import lineage

                up, down = lineage(s, job_id)
        except UnknownJob as e:
            raise ActionError(str(e)) from None
        assigned = {int(g) for g in d.row.assigned_gpus.split(",") if g.strip().isdigit()}
        mine = tuple(g for g in gpus if g.index in assigned)
        return DetailData(d, mine, tuple(names), waiting=waiting, upstream=tuple(up), downstream=tuple(down))

    def series(self, job_id: int, names: Sequence[str], limit: int = 2000) -> dict[str, list[tuple[int, float]]]:
        from db import queries as Q

        with self.store.read() as s:
            return {n: Q.metric_series(s, job_id, n, limit=limit) for n in names}

    def read_log(self, path: str, offset: int | None) -> LogChunk:
        """New complete lines of a log file from `offset` (None: the file's last 64 KiB)."""
        p = Path(path)
        try:
            size = p.stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return LogChunk(path, (), 0 if offset is None else offset)
        reset = False
        if offset is not None and size < offset:  # truncated or replaced
            offset, reset = None, True
        skip_partial = False
        if offset is None:
            offset = max(0, size - LOG_FIRST_BYTES)
            skip_partial = offset > 0
        if size == offset:
            return LogChunk(path, (), offset, reset)
        with open(p, "rb") as fh:
            fh.seek(offset)
            data = fh.read(LOG_CHUNK_BYTES)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) < LOG_CHUNK_BYTES:
                return LogChunk(path, (), offset, reset)
            end = len(data) - 1  # one enormous line: show it in pieces
        chunk = data[: end + 1]
        lines = chunk.decode("utf-8", errors="replace").splitlines()
        if skip_partial and lines:
            lines = lines[1:]
        return LogChunk(path, tuple(lines), offset + end + 1, reset)

    def gpus(self) -> GpuData:
        from db import queries as Q

        with self.store.read() as s:
            t, gpus = Q.gpu_snapshot(s)
            names = Q.job_names(s, sorted({p.job_id for g in gpus for p in g.processes if p.job_id is not None}))
            parts = Q.slurm_partitions(s)
        return GpuData(t, tuple(gpus), names, tuple(parts))

    def specs(self, job_ids: Sequence[int]) -> list[tuple[int, str, dict[str, Any]]]:
        from db import queries as Q

        with self.store.read() as s:
            return Q.job_specs(s, job_ids)

    def spec_of(self, job_id: int) -> dict[str, Any]:
        found = self.specs([job_id])
        if not found:
            raise ActionError(f"job {job_id}: no such job")
        return found[0][2]

    def suggestions(self) -> dict[str, list[str]]:
        """Model and dataset paths and experiment names used before, for the New-job form."""
        from db import queries as Q

        with self.store.read() as s:
            specs = Q.recent_specs(s)
            exps = Q.experiment_names(s)
        models: list[str] = []
        datasets: list[str] = []
        for spec in specs:
            for key in ("model", "sft", "aligned", "base"):
                m = spec.get(key)
                if isinstance(m, dict) and isinstance(m.get("path"), str) and m["path"] not in models:
                    models.append(m["path"])
            d = spec.get("dataset")
            if isinstance(d, dict) and isinstance(d.get("path"), str) and d["path"] not in datasets:
                datasets.append(d["path"])
        return {"model": models, "dataset": datasets, "experiment": exps}

    # ---------------------------------------------------------------- writes

    def cancel(self, job_ids: Sequence[int]) -> list[tuple[int, str]]:
        return self.client.cancel(job_ids)

    def retry(self, job_ids: Sequence[int]) -> list[dict[int, int]]:
        """Retry each job with the jobs skipped because of it: one {old: new} mapping per job."""
        return self.client.retry(job_ids)

    def delete(self, job_ids: Sequence[int]) -> list[int]:
        """Delete finished jobs with their rows and run folders (all or none)."""
        return self.client.rm(job_ids)

    def change_priority(self, job_ids: Sequence[int], delta: int) -> list[tuple[int, int]]:
        return self.client.priority(job_ids, delta=delta)

    def set_queue_state(self, state: str) -> str:
        return self.client.set_queue_state(state)

    def submit(self, data: dict[str, Any], source: str = "form") -> list[int]:
        """Validate and queue a spec mapping (one job, a sweep or a pipeline); the new ids."""
        return self.client.submit(data=data, source=source)

    def write_text(self, path: str, text: str) -> str:
        """Write a file atomically (`db.files`: an unpredictable temporary name, then rename); the path written."""
        target = Path(path).expanduser()
        if not target.is_absolute():
            target = Path.cwd() / target
        if target.is_dir():
            raise ActionError(f"{target}: is a folder")
        try:
            from db.files import write_text_atomic

            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, text)
        except OSError as e:
            raise ActionError(f"{target}: {e.strerror or e}") from None
        return str(target)

    def ensure_worker(self) -> bool:
        """Start a worker if none runs (not when LABDECK_NO_AUTOSTART is set); True if one runs."""
        ok, _message = self.client.ensure_worker()
        return ok


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "results"
