"""Results: an experiment's jobs as the tables and figures papers are made of.

Choose an experiment, a rows field, a columns field, a metric and a reduction; the pivot
(`db.results.pivot`: mean ± std over the jobs in a cell, i.e. over seeds) shows as a table (t),
a heatmap (h), a grouped bar chart (b) or lines of the metric against a numeric rows field, one
per column (l: a learning-rate or alpha sweep); (v) shows what differs between the jobs' specs; (x)
exports the pivot to CSV, Markdown, LaTeX or JSON with the same renderers as `labdeck results`.
The store is read in a thread worker; pivoting the rows it returned is cheap and stays here.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.widgets import ContentSwitcher, DataTable, Label, Select, Static
from textual.worker import get_current_worker

from tui.messages import ActionDone, ResultsLoaded
from tui.screens.common import DataScreen
from tui.source import REDUCTIONS, ActionError, slug
from tui.widgets.bars import GroupedBars
from tui.widgets.heatmap import Heatmap
from tui.widgets.key_bar import KeyBar
from tui.widgets.spec_diff import SpecDiff
from tui.widgets.status_bar import StatusBar

VIEWS = {"table": "view-table", "heatmap": "view-heatmap", "bars": "view-bars", "lines": "view-lines", "diff": "view-diff"}
MAX_DIFF_JOBS = 24
NONE = "(none)"


class ResultsScreen(DataScreen):
    DEFAULT_CSS = """
    #results-controls {
        height: auto;
        layout: grid;
        grid-size: 6;
        grid-columns: 6 1fr 7 1fr 7 1fr;
        grid-rows: 1;
        padding: 0 1;
    }

    #results-controls Label {
        color: $text-muted;
        height: 1;
    }

    #results-controls Select {
        height: 1;
    }

    #views {
        height: 1fr;
    }

    #view-table, #view-diff {
        height: 1fr;
    }

    #view-heatmap, #view-bars, #view-lines {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    """

    BINDINGS = [
        Binding("escape", "app.show_jobs", "Jobs", id="results.back"),
        Binding("t", "view('table')", "Table", id="results.table"),
        Binding("h", "view('heatmap')", "Heatmap", id="results.heatmap"),
        Binding("b", "view('bars')", "Bars", id="results.bars"),
        Binding("l", "view('lines')", "Lines", id="results.lines"),
        Binding("v", "view('diff')", "Spec diff", id="results.diff"),
        Binding("f", "flip", "Swap rows/columns", show=False, id="results.flip"),
        Binding("x", "export", "Export", id="results.export"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.experiment: str | None = None
        self.metric: str | None = None
        self.reduce = "last"
        self.rows_field: str | None = None
        self.cols_field: str | None = None
        # What the person (or `labdeck demo`) asked for; None follows the experiment's main view
        # (db.experiments.main_view), which moves to the last stage's metric once it is reported.
        self.metric_request: str | None = None
        self.axes_chosen = False
        self.view = "table"
        self.data = None  # tui.source.ResultsData
        self.pivot = None  # db.results.Pivot
        self._experiments: list[str] = []

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with Container(id="results-controls"):
            yield Label("exp")
            yield Select([], id="sel-experiment", compact=True, prompt="experiment")
            yield Label("metric")
            yield Select([], id="sel-metric", compact=True, prompt="metric")
            yield Label("reduce")
            yield Select([(r, r) for r in REDUCTIONS], id="sel-reduce", value="last", allow_blank=False, compact=True)
            yield Label("rows")
            yield Select([], id="sel-rows", compact=True, prompt="rows")
            yield Label("cols")
            yield Select([], id="sel-cols", compact=True, prompt="columns")
        yield Static("Choose an experiment.", id="results-info", classes="info-line")
        with ContentSwitcher(initial="view-table", id="views"):
            yield DataTable(id="view-table", cursor_type="row")
            with VerticalScroll(id="view-heatmap"):
                yield Heatmap(id="heatmap")
            with VerticalScroll(id="view-bars"):
                yield GroupedBars(id="bars")
            yield Container(id="view-lines")  # its chart is mounted on first use (plotext loads then)
            yield SpecDiff(id="view-diff")
        yield KeyBar()

    def on_mount(self) -> None:
        self.watch(self.app, "overview", self._overview, init=True)
        self.query_one("#view-table").focus()

    # ------------------------------------------------------------------ choices

    def _overview(self, overview) -> None:  # noqa: ANN001
        if overview is None:
            return
        exps = list(overview.experiments)
        if self.experiment and self.experiment not in exps:
            exps.append(self.experiment)
        sel = self.query_one("#sel-experiment", Select)
        if exps != self._experiments:
            self._experiments = exps
            sel.set_options([(e, e) for e in exps])
        if self.experiment in exps:
            sel.value = self.experiment
        elif exps and self.experiment is None:
            self.experiment = exps[0]
            sel.value = exps[0]
            self.load()

    def choose(self, experiment: str, metric: str | None = None, rows: str | None = None, cols: str | None = None) -> None:
        """Show `experiment` (the app calls this when results are opened from a job, `labdeck demo` with a view)."""
        if experiment != self.experiment or metric:
            self.experiment = experiment
            self.rows_field, self.cols_field, self.metric = rows, cols, metric
            self.metric_request, self.axes_chosen = metric, bool(rows)
            sel = self.query_one("#sel-experiment", Select)
            if experiment not in self._experiments:
                self._experiments.append(experiment)
                sel.set_options([(e, e) for e in self._experiments])
            sel.value = experiment
            self.load()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        # Changed messages arrive after the fact, also for values set here (set_options empties a
        # Select first): a blank one is never a choice, and one equal to the state changes nothing.
        if event.select.is_blank() or event.value is Select.NULL:
            return
        value = event.value
        sid = event.select.id
        if sid == "sel-experiment" and value and value != self.experiment:
            self.experiment = value
            self.rows_field = self.cols_field = self.metric = self.metric_request = None
            self.axes_chosen = False
            self.load()
        elif sid == "sel-metric" and value and value != self.metric:
            self.metric = self.metric_request = value
            self.load()
        elif sid == "sel-reduce" and value and value != self.reduce:
            self.reduce = value
            self.load()
        elif sid == "sel-rows" and value != self.rows_field:
            self.rows_field, self.axes_chosen = value, True
            self._draw()
        elif sid == "sel-cols" and (None if value == NONE else value) != self.cols_field:
            self.cols_field, self.axes_chosen = (None if value == NONE else value), True
            self._draw()

    # ------------------------------------------------------------------ loading


    def load(self) -> None:
        if self.experiment:
            self._load(self.experiment, self.metric_request, self.reduce)

    @work(thread=True, exclusive=True, group="results", exit_on_error=False)
    def _load(self, experiment: str, metric: str | None, reduce: str) -> None:
        data = self.app.source.results(experiment, metric, reduce)
        if not get_current_worker().is_cancelled:
            self.post_message(ResultsLoaded(data))

    def on_results_loaded(self, message: ResultsLoaded) -> None:
        data = message.data
        if data.experiment != self.experiment:
            return
        self.data = data
        self.metric = data.metric
        fields = list(data.fields)
        defaults = [f for f in (data.default_rows, data.default_cols) if f and f not in fields]
        fields = defaults + fields
        if data.default_rows and not (self.axes_chosen and self.rows_field in fields):
            self.rows_field, self.cols_field = data.default_rows, data.default_cols
        else:
            self._fallback_axes(fields)
        metric_sel = self.query_one("#sel-metric", Select)
        metric_sel.set_options([(m, m) for m in data.metric_names])
        if data.metric:
            metric_sel.value = data.metric
        rows_sel = self.query_one("#sel-rows", Select)
        rows_sel.set_options([(f, f) for f in fields])
        if self.rows_field:
            rows_sel.value = self.rows_field
        cols_sel = self.query_one("#sel-cols", Select)
        cols_sel.set_options([(NONE, NONE)] + [(f, f) for f in fields])
        cols_sel.value = self.cols_field or NONE
        self._draw()

    def _fallback_axes(self, fields: list[str]) -> None:
        """Rows and columns when the experiment names no axes: the first varying fields."""
        if self.rows_field not in fields:
            self.rows_field = fields[0] if fields else None
        if self.cols_field is not None and self.cols_field not in fields:
            self.cols_field = None
        if self.cols_field is None and len(fields) > 1 and fields[1] not in ("kind", "status", "name", "seed"):
            self.cols_field = fields[1]

    # ------------------------------------------------------------------ drawing

    def _draw(self) -> None:
        from db.results import pivot

        info = self.query_one("#results-info", Static)
        data = self.data
        if data is None:
            return
        if not data.metric_names:
            self.pivot = None
            info.update(Text(f"{data.experiment}: no job has reported a metric yet"))
            self._clear_views()
            return
        if self.rows_field is None:
            return
        self.pivot = pivot(list(data.rows), data.experiment, data.metric or "", self.rows_field, self.cols_field, data.reduce)
        p = self.pivot
        n = sum(c.n for c in p.cells.values())
        text = f"{data.experiment} · {p.metric} ({p.reduce}) · {len(p.row_labels)}×{max(1, len(p.col_labels))} cells from {n} jobs"
        if p.missing:
            text += f" · {p.missing} without {p.metric}"
        baselines = _baselines(data.rows)
        if baselines:  # a win rate means nothing without what it was against
            text += " · vs " + ", ".join(baselines)
        text += f" · view {self.view}"
        info.update(Text(text))
        self._draw_table()
        self.query_one(Heatmap).show(p)
        self.query_one(GroupedBars).show(p)
        if self.view == "lines":
            self._draw_lines()
        self._draw_diff()

    def _clear_views(self) -> None:
        self.query_one("#view-table", DataTable).clear(columns=True)
        self.query_one(Heatmap).update("")
        self.query_one(GroupedBars).update("")

    def _draw_table(self) -> None:
        p = self.pivot
        table = self.query_one("#view-table", DataTable)
        table.clear(columns=True)
        # explicit widths: auto-sizing measured some cells before they were laid out (flaky truncation)
        head = f"{p.rows_field} \\ {p.cols_field}" if p.cols_field else p.rows_field
        table.add_column(Text(head, style="bold"), key="_row", width=max([len(head), *map(len, p.row_labels)]))
        for c in p.col_labels:
            cells = [p.cells[(r, c)].text() for r in p.row_labels if (r, c) in p.cells]
            table.add_column(Text(c, style="bold", justify="right"), key=f"c:{c}", width=max([len(c), *map(len, cells)]))
        for r in p.row_labels:
            cells = [Text(r, style="bold")]
            for c in p.col_labels:
                cell = p.cells.get((r, c))
                cells.append(Text("" if cell is None else cell.text(), justify="right"))
            table.add_row(*cells, key=f"r:{r}")

    def _draw_diff(self) -> None:
        data = self.data
        unique = {r.id: (r.id, r.name, r.spec) for r in data.rows}  # a metric family gives a job one row per group
        jobs = list(unique.values())[:MAX_DIFF_JOBS]
        self.query_one(SpecDiff).show(jobs)

    def _draw_lines(self) -> None:
        """The metric against the rows field (numeric labels only), one line per column; mean over seeds."""
        from tui.widgets.charts import MetricChart

        box = self.query_one("#view-lines", Container)
        charts = list(box.query(MetricChart))
        chart = charts[0] if charts else MetricChart(id="lines-chart")
        if not charts:
            box.mount(chart)
        p = self.pivot
        series: dict[str, list[tuple[float, float]]] = {}
        for r in p.row_labels:
            try:
                x = float(r)
            except ValueError:
                series = {}
                break
            for c in p.col_labels:
                if (r, c) in p.cells:
                    series.setdefault(c, []).append((x, p.cells[(r, c)].mean))
        title = f"{p.metric} vs {p.rows_field}" if series else f"rows field {p.rows_field!r} is not numeric: no lines"
        chart.show(series, title=title, xlabel=p.rows_field)

    # ------------------------------------------------------------------ actions

    def action_view(self, view: str) -> None:
        self.view = view
        self.query_one("#views", ContentSwitcher).current = VIEWS[view]
        self.query_one(f"#{VIEWS[view]}").focus()
        if self.pivot is not None:
            self._draw()

    def action_flip(self) -> None:
        if self.cols_field is None:
            return
        self.rows_field, self.cols_field = self.cols_field, self.rows_field
        self.axes_chosen = True
        self.query_one("#sel-rows", Select).value = self.rows_field
        self.query_one("#sel-cols", Select).value = self.cols_field
        self._draw()

    def current_experiment(self) -> str | None:
        return self.experiment

    def action_export(self) -> None:
        from tui.screens.dialogs import ExportScreen

        if self.pivot is None or not self.pivot.cells:
            self.notify("Nothing to export: choose an experiment and a metric with values", severity="warning")
            return
        pivot = self.pivot
        stem = slug(f"{pivot.experiment}-{pivot.metric}")

        def chosen(answer: tuple[str, str] | None) -> None:
            if answer:
                fmt, path = answer
                self._export(pivot, fmt, path)

        self.app.push_screen(ExportScreen(stem), chosen)

    @work(thread=True, group="write", exit_on_error=False)
    def _export(self, pivot, fmt: str, path: str) -> None:  # noqa: ANN001
        from db.formats import RENDERERS

        try:
            written = self.app.source.write_text(path, RENDERERS[fmt](pivot))
        except ActionError as e:
            self.post_message(ActionDone(f"Not exported: {e}", "warning", changed=False))
            return
        self.post_message(ActionDone(f"Exported {fmt} to {written}", changed=False))


def _baselines(rows) -> list[str]:  # noqa: ANN001
    """The judges' baselines named in the specs of the rows that have the metric (e.g. 'gpt4_1106_preview
    (alpaca_eval_gpt4_baseline)'), in first-seen order."""
    out: list[str] = []
    for r in rows:
        if r.value is None:
            continue
        for sc in (r.spec or {}).get("scorers") or []:
            b = sc.get("baseline") if isinstance(sc, dict) else None
            if isinstance(b, dict) and b.get("model"):
                label = f"{b['model']} ({b['config']})" if b.get("config") else str(b["model"])
                if label not in out:
                    out.append(label)
    return out
