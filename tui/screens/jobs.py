"""The jobs screen: what runs where and how far along it is, and every action on jobs.

State lives in a few attributes (the query, the page offset, the marked jobs, the key metric);
data arrives from one exclusive thread worker per page load, posted as one `JobsLoaded`.
The screen reloads when the app's poll says the store changed (`app.data_version`), and only
while it is the screen on show; a hidden one reloads when it comes back.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from tui.messages import JobsLoaded
from tui.screens.common import DataScreen, JobActions
from tui.source import PAGE_SIZE, JobQuery
from tui.widgets.filter_line import FilterLine
from tui.widgets.jobs_table import JobsTable
from tui.widgets.key_bar import KeyBar
from tui.widgets.status_bar import StatusBar

SORTS = ("newest", "oldest", "queue", "status", "experiment", "kind", "name")
PREFERRED_METRICS = ("loss", "train_loss", "eval_loss", "win_rate", "reward", "score", "accuracy")


class JobsScreen(JobActions, DataScreen):
    BINDINGS = [
        Binding("enter", "open", "Open", id="jobs.open"),
        Binding("slash", "filter", "Filter", id="jobs.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="jobs.clear_filter"),
        Binding("c", "cancel", "Cancel", id="jobs.cancel", tooltip="asks first"),
        Binding("r", "retry", "Retry", id="jobs.retry"),
        Binding("ctrl+d", "delete", "Delete finished jobs", show=False, id="jobs.delete", tooltip="asks first"),
        Binding("d", "duplicate", "Duplicate & edit", show=False, id="jobs.duplicate"),
        Binding("plus", "priority(1)", "Priority up", show=False, id="jobs.priority_up"),
        Binding("minus", "priority(-1)", "Priority down", show=False, id="jobs.priority_down"),
        Binding("s", "sort", "Sort", show=False, id="jobs.sort"),
        Binding("m", "cycle_metric", "Key metric", show=False, id="jobs.metric"),
        Binding("space", "mark", "Mark", show=False, id="jobs.mark"),
        Binding("v", "compare", "Compare marked specs", show=False, id="jobs.compare"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.query_spec = JobQuery()
        self.page_offset = 0
        self.marked: set[int] = set()
        self.metric: str | None = None
        self.metric_chosen = False
        self.metric_names: list[str] = []
        self._pending_select: int | None = None

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static("jobs …", id="jobs-info", classes="info-line")
        yield JobsTable(id="jobs-table")
        yield Static("No jobs yet. Press [b]n[/b] to queue one, or [b]?[/b] for every key.", id="jobs-empty")
        yield FilterLine("filter: text  status:running  kind:finetune  exp:NAME   (enter keeps, escape clears)",
                         id="jobs-filter")
        yield KeyBar()

    def on_mount(self) -> None:
        self.watch(self.app, "now", self._clock, init=False)
        self.query_one(JobsTable).focus()
        self.call_after_refresh(self.load)  # after the first frame (see LabdeckApp.on_mount)

    # ------------------------------------------------------------------ loading

    def _clock(self, now: float) -> None:
        if self.is_current:
            self.query_one(JobsTable).tick(now)

    def load(self, offset: int | None = None, cursor: str | None = None, select_id: int | None = None) -> None:
        # A job still waiting to be selected (after a submit or a retry) survives reloads that
        # replace the load that was meant to find it (loads are exclusive: the newest wins).
        if select_id is None and cursor is None and offset is None:
            select_id = self._pending_select
        self._load(self.query_spec, self.page_offset if offset is None else offset, cursor, select_id)

    @work(thread=True, exclusive=True, group="jobs-page", exit_on_error=False)
    def _load(self, query: JobQuery, offset: int, cursor: str | None, select_id: int | None) -> None:
        source = self.app.source
        if select_id is not None:
            found = source.offset_of(query, select_id)
            if found is not None:
                offset = found
        page = source.jobs_page(query, offset)
        if not get_current_worker().is_cancelled:
            self.post_message(JobsLoaded(page, cursor, select_id))

    def on_jobs_loaded(self, message: JobsLoaded) -> None:
        self._show(message.page, message.cursor, message.select_id)

    def _show(self, page, cursor: str | None, select_id: int | None) -> None:  # noqa: ANN001
        if page.query != self.query_spec:
            return  # a page for a filter already replaced
        self.page_offset = page.offset
        table = self.query_one(JobsTable)
        names = sorted({n for m in page.metrics.values() for n in m})
        self.metric_names = sorted(set(self.metric_names) | set(names))
        if not self.metric_chosen:
            pick = next((n for n in PREFERRED_METRICS if n in names), names[0] if names else None)
            if pick is not None and pick != self.metric:
                self.metric = pick
                table.set_metric(pick)
        if select_id is not None and select_id == self._pending_select:
            self._pending_select = None
        table.marked = self.marked
        table.show_page(page, self.app.now, select_id=select_id, cursor=cursor)
        self.query_one("#jobs-empty").display = page.total == 0 and not page.query.filtered
        self._update_info()
        self.app.warm_up()  # the first screenful is up: load the rest in the background

    def _update_info(self) -> None:
        table = self.query_one(JobsTable)
        page = table.page
        if page is None:
            return
        n = len(page.rows)
        span = f"{page.offset + 1:,}–{page.offset + n:,} of {page.total:,}" if n else f"0 of {page.total:,}"
        parts = [f"jobs {span}", f"sort {self.query_spec.sort}"]
        if self.query_spec.filtered:
            parts.append(f"filter {self.query_spec.describe()}")
        if self.marked:
            parts.append(f"{len(self.marked)} marked")
        if getattr(page, "archived_hidden", False):
            parts.append("archived experiments hidden (e, A)")
        self.query_one("#jobs-info", Static).update(" · ".join(parts))

    @on(JobsTable.PageRequest)
    def _page(self, event: JobsTable.PageRequest) -> None:
        self.load(offset=max(0, self.page_offset + event.delta * PAGE_SIZE), cursor=event.cursor)

    def select_job(self, job_id: int) -> None:
        """Show the page holding `job_id` with the cursor on it (after a submit or a retry)."""
        self._pending_select = job_id
        self.load(select_id=job_id)

    # ------------------------------------------------------------------ selection

    def selected_ids(self) -> list[int]:
        if self.marked:
            return sorted(self.marked)
        jid = self.query_one(JobsTable).cursor_job_id
        return [] if jid is None else [jid]

    def current_experiment(self) -> str | None:
        table = self.query_one(JobsTable)
        jid = table.cursor_job_id
        if table.page is None or jid is None:
            return None
        return next((r.experiment for r in table.page.rows if r.id == jid), None)

    # ------------------------------------------------------------------ actions

    def action_open(self) -> None:
        jid = self.query_one(JobsTable).cursor_job_id
        if jid is not None:
            self.app.open_job(jid)

    @on(DataTable.RowSelected, "#jobs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_filter(self) -> None:
        self.query_one(FilterLine).open()

    def action_clear_filter(self) -> None:
        line = self.query_one(FilterLine)
        had = bool(line.value) or self.query_spec.filtered
        line.close()
        self.query_one(JobsTable).focus()
        if had:
            self._set_query(JobQuery(sort=self.query_spec.sort))
        elif self.marked:
            self.marked.clear()
            self.query_one(JobsTable).set_marked(self.marked)
            self._update_info()

    @on(FilterLine.Applied, "#jobs-filter")
    def _filter_applied(self, event: FilterLine.Applied) -> None:
        self._set_query(JobQuery.parse(event.text, self.query_spec.sort))
        if event.submitted:
            self.query_one(JobsTable).focus()

    def _set_query(self, query: JobQuery) -> None:
        if query != self.query_spec:
            self.query_spec = query
            self._update_info()
            self.load(offset=0, cursor="first")

    def set_filter(self, text: str) -> None:
        """Filter as if `text` was typed after `/` (the palette's filter commands use this)."""
        self.query_one(FilterLine).show_text(text)
        self._set_query(JobQuery.parse(text, self.query_spec.sort))

    def action_sort(self) -> None:
        i = SORTS.index(self.query_spec.sort)
        self.set_sort(SORTS[(i + 1) % len(SORTS)])

    def set_sort(self, sort: str) -> None:
        q = self.query_spec
        self._set_query(JobQuery(q.text, q.experiment, q.statuses, q.kinds, sort))
        self.notify(f"Sorted by {sort}", timeout=1.5)

    def action_cycle_metric(self) -> None:
        options: list[str | None] = [*self.metric_names, None]
        i = options.index(self.metric) if self.metric in options else -1
        self.metric = options[(i + 1) % len(options)]
        self.metric_chosen = True
        self.query_one(JobsTable).set_metric(self.metric)
        self.notify(f"Key metric: {self.metric or 'none'}", timeout=1.5)

    def action_mark(self) -> None:
        table = self.query_one(JobsTable)
        jid = table.cursor_job_id
        if jid is None:
            return
        self.marked.symmetric_difference_update({jid})
        table.set_marked(self.marked)
        self._update_info()
        table.action_cursor_down()

    def action_compare(self) -> None:
        ids = sorted(self.marked)
        if len(ids) < 2:
            self.notify("Mark two or more jobs with space, then press v", severity="warning")
            return
        self.load_specs(ids, "compare")
