"""The jobs table: one page of jobs at a time in a DataTable, updated in place.

It never holds more than a page (`PAGE_SIZE` rows) however many jobs the store has: moving past
the last row asks the screen for the next page (keys cross page boundaries as if the list were
one), and the screen reads that page from SQLite in a worker. A refresh of the same page changes
only the cells whose text changed (`update_cell` by row key), so the cursor and the scroll
position stay where they are; when the set of rows changes, the cursor follows its job.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from tui.render import duration, number, progress_cell, status_text
from tui.widgets.job_columns import WIDE, Column, gpus_text, layout


class JobsTable(DataTable):
    """One page of `JobRow`s. The screen owns paging; this widget owns cells and the cursor."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="jobs.cursor_down"),
        Binding("k", "cursor_up", "Up", show=False, id="jobs.cursor_up"),
        Binding("home", "edge('first')", "First row of the page", show=False, id="jobs.first_row"),
        Binding("end", "edge('last')", "Last row of the page", show=False, id="jobs.last_row"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, id="jobs.next_page"),
        Binding("left_square_bracket", "page(-1)", "Previous page", show=False, id="jobs.previous_page"),
    ]

    DEFAULT_CSS = """
    JobsTable { height: 1fr; scrollbar-size-vertical: 1; }
    """

    class PageRequest(Message):
        """Show the page `delta` pages away; put the cursor on its first or last row."""

        def __init__(self, delta: int, cursor: str) -> None:
            super().__init__()
            self.delta = delta
            self.cursor = cursor

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.page = None  # tui.source.JobsPage
        self.metric: str | None = None
        self.marked: set[int] = set()
        self.now = 0.0
        self._columns: list[Column] = []
        self._cells: dict[str, list[Text | str]] = {}
        self._keys: list[str] = []
        self._wide: bool | None = None
        self._built_width = 0

    # ------------------------------------------------------------------ layout

    def _column_specs(self, width: int, page) -> list[Column]:  # noqa: ANN001
        rows = page.rows if page is not None else ()
        texts = [self._metric_text(r.id, page) for r in rows] if self.metric else []
        reasons = [self._reason(r.id, page) for r in rows] if page is not None and page.reasons else []
        return layout(rows, width, metric=self.metric, metric_texts=texts, reasons=reasons, padding=self.cell_padding)

    @staticmethod
    def _reason(job_id: int, page) -> str:  # noqa: ANN001
        from tui.waiting import short_reason

        found = page.reasons.get(job_id) if page is not None else None
        return short_reason(found) if found else ""

    def _metric_text(self, job_id: int, page) -> str:  # noqa: ANN001
        v = page.metrics.get(job_id, {}).get(self.metric) if page is not None and self.metric else None
        return number(v)

    def _rebuild_columns(self, columns: list[Column]) -> None:
        width = self.outer_size.width or 80
        self._columns = columns
        self._wide = width >= WIDE
        self._built_width = width
        self.clear(columns=True)
        self._cells.clear()
        self._keys = []
        for c in self._columns:
            self.add_column(c.label, width=c.width, key=c.key)

    def on_resize(self) -> None:
        if self._columns and abs(self.outer_size.width - self._built_width) >= 1:
            self._show(self.page, force_rebuild=True)

    # ------------------------------------------------------------------ cells

    def _row_cells(self, r) -> list[Text | str]:  # noqa: ANN001 - db.queries.JobRow
        out: list[Text | str] = []
        for c in self._columns:
            k = c.key
            if k == "id":
                out.append(Text(f"{'●' if r.id in self.marked else ' '}{r.id}", style="bold" if r.id in self.marked else ""))
            elif k == "experiment":
                out.append(Text(r.experiment))  # Text, never str: a name like "sft[lr=1]" is not markup
            elif k == "kind":
                out.append(Text(r.kind))
            elif k == "name":
                out.append(Text(r.name))
            elif k == "status":
                label = status_text(r.status, icon=bool(self._wide), width=c.width)
                if r.attempt > 1 and self._wide:
                    label.append(f" #{r.attempt}", style="dim")
                out.append(label)
            elif k == "gpus":
                out.append(Text(gpus_text(r)))
            elif k == "reason":
                out.append(Text(self._reason(r.id, self.page), style="dim", no_wrap=True, overflow="ellipsis"))
            elif k == "progress":
                out.append(progress_cell(r.fraction, c.width, r.status))
            elif k == "elapsed":
                out.append(Text(duration(r.elapsed(self.now)), justify="right"))
            elif k == "eta":
                out.append(Text(duration(r.eta_s) if r.status == "running" else "", justify="right"))
            elif k == "metric":
                out.append(Text(self._metric_text(r.id, self.page), justify="right"))
        return out

    # ------------------------------------------------------------------ public

    @property
    def cursor_job_id(self) -> int | None:
        if not self._keys or self.cursor_row < 0 or self.cursor_row >= len(self._keys):
            return None
        return int(self._keys[self.cursor_row])

    @property
    def job_ids(self) -> list[int]:
        return [int(k) for k in self._keys]

    def show_page(self, page, now: float, select_id: int | None = None, cursor: str | None = None) -> None:  # noqa: ANN001
        """Show `page`; keep the cursor on its job, or put it on `select_id` / the first or last row."""
        self.now = now
        self._show(page, select_id=select_id, cursor=cursor)

    def set_metric(self, metric: str | None) -> None:
        if metric != self.metric:
            self.metric = metric
            self._show(self.page, force_rebuild=True)

    def set_marked(self, marked: set[int]) -> None:
        self.marked = set(marked)
        self._show(self.page)

    def tick(self, now: float) -> None:
        """The clock moved: update elapsed times of running jobs (no query)."""
        self.now = now
        if self.page is None:
            return
        keys = [c.key for c in self._columns]
        if "elapsed" not in keys:
            return
        col = keys.index("elapsed")
        for r in self.page.rows:
            if r.status == "running":
                key = str(r.id)
                cell = Text(duration(r.elapsed(now)), justify="right")
                if key in self._cells and self._cells[key][col] != cell:
                    self._cells[key][col] = cell
                    self.update_cell(key, "elapsed", cell)

    def _show(self, page, *, select_id: int | None = None, cursor: str | None = None, force_rebuild: bool = False) -> None:  # noqa: ANN001, C901
        self.page = page
        columns = self._column_specs(self.outer_size.width or 80, page)
        if columns != self._columns or force_rebuild:
            current = self.cursor_job_id
            self._rebuild_columns(columns)
            if select_id is None and cursor is None:
                select_id = current
        if page is None:
            return
        keys = [str(r.id) for r in page.rows]
        if keys == self._keys and select_id is None and cursor is None:
            for r in page.rows:
                key = str(r.id)
                new = self._row_cells(r)
                old = self._cells[key]
                for c, before, after in zip(self._columns, old, new, strict=True):
                    if before != after:
                        self.update_cell(key, c.key, after)
                self._cells[key] = new
            return
        if select_id is None and cursor is None:
            select_id = self.cursor_job_id
        old_row = self.cursor_row
        self.clear()
        self._cells.clear()
        for r in page.rows:
            key = str(r.id)
            cells = self._row_cells(r)
            self._cells[key] = cells
            self.add_row(*cells, key=key)
        self._keys = keys
        if not keys:
            return
        if cursor == "last":
            row = len(keys) - 1
        elif cursor == "first":
            row = 0
        elif select_id is not None and str(select_id) in keys:
            row = keys.index(str(select_id))
        else:
            row = min(max(old_row, 0), len(keys) - 1)
        self.move_cursor(row=row, animate=False)

    # ------------------------------------------------------------------ keys across pages

    def _has_next(self) -> bool:
        p = self.page
        return p is not None and p.offset + len(p.rows) < p.total

    def _has_previous(self) -> bool:
        return self.page is not None and self.page.offset > 0

    def action_cursor_down(self) -> None:
        if self._keys and self.cursor_row >= len(self._keys) - 1:
            if self._has_next():
                self.post_message(self.PageRequest(1, "first"))
            return
        super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self._keys and self.cursor_row <= 0:
            if self._has_previous():
                self.post_message(self.PageRequest(-1, "last"))
            return
        super().action_cursor_up()

    def action_edge(self, which: str) -> None:
        if self._keys:
            self.move_cursor(row=0 if which == "first" else len(self._keys) - 1, animate=False)

    def action_page(self, delta: int) -> None:
        if (delta > 0 and self._has_next()) or (delta < 0 and self._has_previous()):
            self.post_message(self.PageRequest(delta, "first"))
