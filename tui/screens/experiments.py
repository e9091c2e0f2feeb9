"""Experiments: every experiment with its jobs by state, progress, GPUs, last activity and disk.

Researchers think in experiments and stages, not in a flat list of jobs. This screen lists one
row per experiment, most recently active first, aggregated in SQL (`db.experiments.experiment_rows`:
one pass over the jobs, a page of 100 rows however many there are); `enter` opens its pipeline,
`2` its results. The disk column walks run folders, so it is read in a second worker after the
rows are shown. Filter with `/` as on the jobs screen (`status:failed` keeps experiments with a
failed job; other words match name or description).
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from tui.messages import DiskLoaded, ExperimentsLoaded, PipelineLoaded
from tui.render import ago, size_text, state_bar, state_counts
from tui.screens.common import DataScreen
from tui.screens.experiment_actions import ExperimentActions
from tui.screens.prune_dialog import PruneActions
from tui.source import JobQuery
from tui.source_experiments import EXPERIMENTS_PAGE
from tui.widgets.filter_line import FilterLine
from tui.widgets.key_bar import KeyBar
from tui.widgets.status_bar import StatusBar

BAR = 10
ARCHIVED = " (archived)"


def column_widths(page, width: int, now: float) -> list[tuple[str, str, int]]:  # noqa: ANN001 - ExperimentsPage
    """(key, label, width) per column: content-sized; the description gets what is left, or goes."""
    rows = page.rows if page is not None else ()
    cols = [
        ("name", "experiment", min(32, max([10, *(len(r.name) + (len(ARCHIVED) if r.archived_at else 0) for r in rows)]))),
        ("jobs", "jobs", max([4, *(state_counts(r.counts).cell_len for r in rows)])),
        ("bar", "states", BAR),
        ("progress", "done", 4),
        ("gpus", "GPUs", 4),
        ("last", "active", max([6, *(len(ago(r.last_activity, now)) for r in rows)])),
        ("disk", "disk", 6),
    ]
    used = sum(w for *_, w in cols) + 2 * (len(cols) + 1) + 1
    room = width - used
    if room >= 12:
        cols.insert(1, ("description", "description", room))
    return cols


class ExperimentsScreen(PruneActions, ExperimentActions, DataScreen):
    DEFAULT_CSS = """
    #experiments-table { height: auto; max-height: 50%; scrollbar-size-vertical: 1; }
    #experiments-preview { height: 1fr; padding: 0 1; border-top: solid $panel; }
    #experiments-empty { height: auto; padding: 1 2; color: $text-muted; }
    """

    BINDINGS = [
        Binding("enter", "open", "Pipeline", id="experiments.open"),
        Binding("slash", "filter", "Filter", id="experiments.filter"),
        Binding("a", "archive", "Archive/restore", show=False, id="experiments.archive", tooltip="hide from the lists, keep on disk"),
        Binding("A", "toggle_archived", "Show archived", show=False, id="experiments.show_archived"),
        Binding("ctrl+d", "delete_experiment", "Delete", show=False, id="experiments.delete", tooltip="asks first"),
        Binding("K", "prune", "Keep best N", show=False, id="experiments.prune",
                tooltip="delete the weights of all but the best fine-tunes by a metric (asks first)"),
        Binding("escape", "clear_filter", "Clear filter / jobs", show=False, id="experiments.clear_filter"),
        Binding("j", "cursor('down')", "Down", show=False, id="experiments.down"),
        Binding("k", "cursor('up')", "Up", show=False, id="experiments.up"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, id="experiments.next_page"),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False, id="experiments.previous_page"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.query_spec = JobQuery()
        self.page_offset = 0
        self.page = None  # tui.source_experiments.ExperimentsPage
        self.disk: dict[str, int] = {}
        self._layout: list[tuple[str, str, int]] = []
        self._preview_timer = None
        self.preview = None  # db.experiments.Pipeline of the highlighted experiment
        self.show_archived = False  # `A`: archived experiments listed too

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static("experiments …", id="experiments-info", classes="info-line")
        yield DataTable(id="experiments-table", cursor_type="row")
        yield Static("No experiments yet (archived ones show with [b]A[/b]). Press [b]n[/b] to queue a job or a recipe.",
                     id="experiments-empty")
        with VerticalScroll(id="experiments-preview"):
            yield Static("", id="experiments-pipeline")
        yield FilterLine("filter: text  status:failed   (enter keeps, escape clears)",
                         id="experiments-filter")
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#experiments-empty").display = False
        self.query_one("#experiments-table").focus()
        self.load()

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        q = self.query_spec
        text = " ".join(w for w in (q.experiment, q.text) if w)
        self._load(text, q.statuses, self.page_offset, None if self.show_archived else False)

    @work(thread=True, exclusive=True, group="experiments", exit_on_error=False)
    def _load(self, text: str, statuses: tuple[str, ...], offset: int, archived: bool | None = False) -> None:
        page = self.app.source.experiments(text, statuses, offset, archived=archived)
        if not get_current_worker().is_cancelled:
            self.post_message(ExperimentsLoaded(page))

    @work(thread=True, exclusive=True, group="experiments-disk", exit_on_error=False)
    def _load_disk(self, names: list[str]) -> None:
        sizes = self.app.source.disk_usage(names)
        if not get_current_worker().is_cancelled:
            self.post_message(DiskLoaded(sizes))

    def on_experiments_loaded(self, message: ExperimentsLoaded) -> None:
        self.page = message.page
        self.page_offset = message.page.offset
        self._draw()
        self._load_disk([r.name for r in message.page.rows])
        self._load_preview()  # the highlighted experiment's stages may have moved on

    @on(DataTable.RowHighlighted, "#experiments-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(0.1, self._load_preview)

    def _load_preview(self) -> None:
        exp = self.current_experiment()
        if exp:
            self._read_pipeline(exp)

    @work(thread=True, exclusive=True, group="experiments-preview", exit_on_error=False)
    def _read_pipeline(self, experiment: str) -> None:
        from tui.source import ActionError

        try:
            p = self.app.source.pipeline(experiment)
        except ActionError:
            return
        if not get_current_worker().is_cancelled:
            self.post_message(PipelineLoaded(p))

    def on_pipeline_loaded(self, message: PipelineLoaded) -> None:
        self.preview = message.pipeline
        self._draw_preview()

    def _draw_preview(self) -> None:
        from rich.console import Group

        from tui.widgets.pipeline_grid import grid

        p = self.preview
        body = self.query_one("#experiments-pipeline", Static)
        if p is None or p.experiment != self.current_experiment():
            body.update("")
            return
        axes = " × ".join(p.axes) if p.axes else "no matrix"
        head = Text.assemble((p.experiment, "bold"), f"  {len(p.stages)} stage{'s' if len(p.stages) != 1 else ''} · columns {axes} · enter opens it",
                             style="")
        width = self.query_one("#experiments-preview").size.width or 78
        body.update(Group(head, grid(p, width)))

    def on_disk_loaded(self, message: DiskLoaded) -> None:
        self.disk.update(message.bytes_by_experiment)
        table = self.query_one("#experiments-table", DataTable)
        if any(k == "disk" for k, *_ in self._layout):
            for name, n in message.bytes_by_experiment.items():
                if name in table.rows:
                    table.update_cell(name, "disk", Text(size_text(n), justify="right"))

    def on_resize(self) -> None:
        if self.page is not None:
            self._draw()
        if self.preview is not None:
            self._draw_preview()

    # ------------------------------------------------------------------ drawing

    def _cells(self, r, layout) -> list[Text]:  # noqa: ANN001
        now = self.app.now
        out = []
        for key, _label, width in layout:
            if key == "name":
                out.append(Text.assemble((r.name, "bold"), (ARCHIVED, "dim")) if r.archived_at else Text(r.name, style="bold"))
            elif key == "description":
                out.append(Text(r.description, style="dim", overflow="ellipsis", no_wrap=True))
            elif key == "jobs":
                out.append(state_counts(r.counts))
            elif key == "bar":
                out.append(state_bar(r.counts, width))
            elif key == "progress":
                out.append(Text("" if r.progress is None else f"{r.progress * 100:.0f}%", justify="right"))
            elif key == "gpus":
                out.append(Text(str(r.gpus_in_use) if r.gpus_in_use else "-", justify="right"))
            elif key == "last":
                out.append(Text(ago(r.last_activity, now), justify="right"))
            elif key == "disk":
                out.append(Text(size_text(self.disk.get(r.name)), justify="right"))
        return out

    def _draw(self) -> None:
        page = self.page
        table = self.query_one("#experiments-table", DataTable)
        layout = column_widths(page, table.outer_size.width or self.size.width or 80, self.app.now)
        current = self.current_experiment()
        if layout != self._layout:
            self._layout = layout
            table.clear(columns=True)
            for key, label, width in layout:
                table.add_column(label, width=width, key=key)
        else:
            table.clear()
        for r in page.rows:
            table.add_row(*self._cells(r, layout), key=r.name)
        names = [r.name for r in page.rows]
        if current in names:
            table.move_cursor(row=names.index(current), animate=False)
        n = len(page.rows)
        span = f"{page.offset + 1:,}–{page.offset + n:,} of {page.total:,}" if n else f"0 of {page.total:,}"
        parts = [f"experiments {span}", "most recently active first"]
        if self.show_archived:
            parts.append("archived shown")
        if self.query_spec.filtered:
            parts.append(f"filter {self.query_spec.describe()}")
        self.query_one("#experiments-info", Static).update(" · ".join(parts))
        self.query_one("#experiments-empty").display = page.total == 0 and not self.query_spec.filtered and not self.show_archived

    # ------------------------------------------------------------------ actions

    def current_experiment(self) -> str | None:
        table = self.query_one("#experiments-table", DataTable)
        if self.page is None or not table.row_count:
            return None
        try:
            return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        except Exception:  # noqa: BLE001 - an empty or just-cleared table has no cursor
            return None

    def action_open(self) -> None:
        exp = self.current_experiment()
        if exp:
            from tui.screens.pipeline import PipelineScreen

            self.app.push_screen(PipelineScreen(exp))

    @on(DataTable.RowSelected, "#experiments-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_cursor(self, direction: str) -> None:
        table = self.query_one("#experiments-table", DataTable)
        table.action_cursor_down() if direction == "down" else table.action_cursor_up()

    def action_page(self, delta: int) -> None:
        if self.page is None:
            return
        offset = self.page_offset + delta * EXPERIMENTS_PAGE
        if 0 <= offset < self.page.total:
            self.page_offset = offset
            self.load()

    def action_filter(self) -> None:
        self.query_one(FilterLine).open()

    async def action_clear_filter(self) -> None:
        line = self.query_one(FilterLine)
        if not line.is_open and not self.query_spec.filtered:
            await self.app.run_action("show_jobs")  # nothing to clear: back to the jobs
            return
        line.close()
        self.query_one("#experiments-table").focus()
        self.set_filter("")

    @on(FilterLine.Applied, "#experiments-filter")
    def _filter_applied(self, event: FilterLine.Applied) -> None:
        self.set_filter(event.text)
        if event.submitted:
            self.query_one("#experiments-table").focus()

    def set_filter(self, text: str) -> None:
        query = JobQuery.parse(text)
        if query != self.query_spec:
            self.query_spec = query
            self.page_offset = 0
            self.load()
