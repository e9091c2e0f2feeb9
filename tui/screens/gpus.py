"""GPUs: per-GPU memory and utilisation bars, and which job (or someone else's process) holds what.

The worker is the only process that talks to NVML; it publishes a snapshot every heartbeat and
this screen reads it from the store in a thread worker, like every other read.
"""

from __future__ import annotations

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
        self.query_one("#gpus-body", Static).update(gpus_renderable(self.data.gpus, self.data.job_names, width))

    def on_resize(self) -> None:
        if self.data is not None:
            self.on_gpus_loaded(GpusLoaded(self.data))

    def _title(self) -> None:
        if self.data is None:
            return
        t = Text.assemble(("GPUs", "bold"), f"  {len(self.data.gpus)} found", ("  snapshot " + ago(self.data.at, self.app.now), "dim"))
        self.query_one("#gpus-title", Static).update(t)
