"""GPUs: per-GPU memory and utilisation bars, and which job (or someone else's process) holds what.

The worker is the only process that talks to NVML; it publishes a snapshot every heartbeat and
this screen reads it from the store in a thread worker, like every other read.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static
from textual.worker import get_current_worker

from tui.messages import GpusLoaded
from tui.render import ago
from tui.screens.common import DataScreen
from tui.widgets.gpu_panel import gpus_renderable
from tui.widgets.key_bar import KeyBar
from tui.widgets.status_bar import StatusBar


def partitions_table(partitions: tuple[dict[str, Any], ...]) -> Table:
    """Slurm's partitions (from the Slurm worker's `sinfo`): idle/total GPUs and node states."""
    t = Table(title="Slurm partitions", title_justify="left", box=None, header_style="bold")
    for col in ("partition", "avail", "nodes", "GPUs idle/total", "node states"):
        t.add_column(col)
    for p in partitions:
        states = ", ".join(f"{n} {st}" for st, n in sorted((p.get("states") or {}).items()))
        t.add_row(str(p.get("partition", "?")), str(p.get("available", "")), str(p.get("nodes", "")),
                  f"{p.get('gpus_idle', 0)}/{p.get('gpus_total', 0)}", states)
    return t


class GpusScreen(DataScreen):
    DEFAULT_CSS = """
    #gpus { height: 1fr; padding: 0 1; }
    """
    BINDINGS = [Binding("escape", "app.show_jobs", "Jobs", id="gpus.back")]

    def __init__(self) -> None:
        super().__init__()
        self.data = None  # tui.source.GpuData

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static("GPUs", id="gpus-title", classes="screen-title")
        with VerticalScroll(id="gpus"):
            yield Static(id="gpus-body")
        yield KeyBar()

    def on_mount(self) -> None:
        self.watch(self.app, "now", self._clock, init=False)
        self.load()


    def _clock(self, _now: float) -> None:
        if self.is_current:
            self._title()

    def load(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="gpus", exit_on_error=False)
    def _load(self) -> None:
        data = self.app.source.gpus()
        if not get_current_worker().is_cancelled:
            self.post_message(GpusLoaded(data))

    def on_gpus_loaded(self, message: GpusLoaded) -> None:
        self.data = message.data
        self._title()
        width = self.query_one("#gpus").size.width or 78
        body = gpus_renderable(self.data.gpus, self.data.job_names, width)
        if self.data.partitions:
            body = Group(body, partitions_table(self.data.partitions))
        self.query_one("#gpus-body", Static).update(body)

    def on_resize(self) -> None:
        if self.data is not None:
            self.on_gpus_loaded(GpusLoaded(self.data))

    def _title(self) -> None:
        if self.data is None:
            return
        t = Text.assemble(("GPUs", "bold"), f"  {len(self.data.gpus)} found", ("  snapshot " + ago(self.data.at, self.app.now), "dim"))
        self.query_one("#gpus-title", Static).update(t)
