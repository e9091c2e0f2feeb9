"""Two or more jobs side by side: the spec fields that differ, and their loss curves overlaid.

The curves are read in a thread worker; textual_plotext is imported only when this screen opens.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import get_current_worker

from tui.messages import SeriesLoaded
from tui.widgets.key_bar import KeyBar
from tui.widgets.spec_diff import SpecDiff
from tui.widgets.status_bar import StatusBar

CURVE = "loss"


class CompareScreen(Screen):
    DEFAULT_CSS = """
    CompareScreen #compare-diff { height: 1fr; }
    CompareScreen #compare-curves { height: 1fr; min-height: 10; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="compare.back")]

    def __init__(self, specs: list[tuple[int, str, dict[str, Any]]]) -> None:
        super().__init__()
        self.specs = specs

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(id="compare-title", classes="screen-title")
        yield SpecDiff(id="compare-diff")
        from tui.widgets.charts import MetricChart

        yield MetricChart(id="compare-curves", classes="hidden")
        yield KeyBar()

    def on_mount(self) -> None:
        diff = self.query_one(SpecDiff)
        diff.show(self.specs)
        ids = ", ".join(f"#{i}" for i, _, _ in self.specs)
        n = diff.row_count
        self.query_one("#compare-title", Static).update(
            f"[b]Compare[/b] {ids} · {n} field{'s' if n != 1 else ''} differ · {diff.same} identical hidden"
        )
        diff.focus()
        self._fetch_curves([i for i, _, _ in self.specs])

    @work(thread=True, exclusive=True, group="curves", exit_on_error=False)
    def _fetch_curves(self, job_ids: list[int]) -> None:
        series = {f"#{jid}": self.app.source.series(jid, [CURVE]).get(CURVE, []) for jid in job_ids}
        if not get_current_worker().is_cancelled:
            self.post_message(SeriesLoaded(0, series))

    def on_series_loaded(self, message: SeriesLoaded) -> None:
        from tui.widgets.charts import MetricChart

        chart = self.query_one("#compare-curves", MetricChart)
        if any(message.series.values()):
            chart.remove_class("hidden")
            chart.show(message.series, title=f"{CURVE} of the marked jobs")
