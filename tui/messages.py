"""Messages thread workers post back to the event loop: one message per finished piece of work.

Refresh results come about once a second; if the loop is busy, a newer one replaces an older one
still waiting in the queue (`can_replace`, toolong's habit), so refreshes never pile up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


class _Latest(Message):
    """A refresh whose newer copy makes an older, unprocessed one pointless."""

    def can_replace(self, message: Message) -> bool:
        return type(message) is type(self)


@dataclass
class Polled(_Latest):
    """The app-level poll: the store's fingerprint and, when it was read, the overview."""

    fingerprint: tuple[int, ...]
    overview: Any  # tui.source.Overview | None
    changed: bool


@dataclass
class JobsLoaded(Message):
    """A page of jobs; `cursor`/`select_id` say where the cursor goes (a page move, a new job)."""

    page: Any  # tui.source.JobsPage
    cursor: str | None = None
    select_id: int | None = None

    def can_replace(self, message: Message) -> bool:
        # A plain refresh may replace an older plain refresh, never a page move still to be shown.
        return isinstance(message, JobsLoaded) and message.cursor is None and message.select_id is None


@dataclass
class DetailLoaded(_Latest):
    data: Any  # tui.source.DetailData


@dataclass
class SeriesLoaded(_Latest):
    job_id: int
    series: dict[str, list[tuple[int, float]]]


@dataclass
class LogLoaded(Message):
    """New log lines; never replaced (every batch must be shown, in order)."""

    chunk: Any  # tui.source.LogChunk


@dataclass
class ResultsLoaded(_Latest):
    data: Any  # tui.source.ResultsData


@dataclass
class GpusLoaded(_Latest):
    data: Any  # tui.source.GpuData


@dataclass
class SpecsLoaded(Message):
    specs: list[tuple[int, str, dict[str, Any]]]
    purpose: str  # "compare" | "duplicate"


@dataclass
class ActionDone(Message):
    """A write finished (or was refused): what to tell the person, and whether to reload."""

    text: str
    severity: str = "information"
    changed: bool = True
    select_id: int | None = None


@dataclass
class ExperimentsLoaded(_Latest):
    page: Any  # tui.source_experiments.ExperimentsPage


@dataclass
class DiskLoaded(_Latest):
    bytes_by_experiment: dict[str, int]


@dataclass
class PipelineLoaded(_Latest):
    pipeline: Any  # db.experiments.Pipeline


@dataclass
class RunDiskLoaded(_Latest):
    """A job's run folder measured: {"total", "checkpoints", "outputs"} bytes (the detail's Artifacts tab)."""

    sizes: dict[str, int]
