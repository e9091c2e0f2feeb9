"""One experiment's pipeline: stages as rows, matrix points as columns, a state glyph per cell.

A 63-job pipeline is 63 rows in the jobs table; here it is a grid like Airflow's: which stage is
where, for which teacher and student, at a glance. The `needs` column names the stages each
stage waits on. A stage over fewer axes than the grid (the teachers' generation under every
student) shows its job under each point it feeds. A deep or wide matrix (three axes, or more
points than columns fit) opens as a tree instead (stage → axis values → jobs, `tui.widgets.pipeline_tree`);
`t` switches between the two. Keys act on the cell, tree line or its stage: `enter` opens the
job, `r` retries the stage's failed jobs (with the stages they skipped), `c` cancels what remains
of the experiment (asks first), `2` opens its results.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static, Tree
from textual.worker import get_current_worker

from tui.messages import ActionDone, PipelineLoaded
from tui.screens.common import DataScreen
from tui.source import ActionError
from tui.widgets import pipeline_tree
from tui.widgets.key_bar import KeyBar
from tui.widgets.pipeline_grid import ATTENTION, cell_text, header_labels, stage_label
from tui.widgets.status_bar import StatusBar


class PipelineScreen(DataScreen):
    DEFAULT_CSS = """
    #pipeline-grid, #pipeline-tree { height: 1fr; scrollbar-size-vertical: 1; }
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="pipeline.back"),
        Binding("enter", "open", "Open job", id="pipeline.open"),
        Binding("r", "retry_stage", "Retry stage", id="pipeline.retry", tooltip="its failed jobs, with what they skipped"),
        Binding("c", "cancel_rest", "Cancel rest", id="pipeline.cancel", tooltip="asks first"),
        Binding("2", "results", "Results", id="pipeline.results"),
        Binding("t", "toggle_view", "Grid/tree", id="pipeline.view", tooltip="stages × points, or a tree of axes"),
    ]

    def __init__(self, experiment: str) -> None:
        super().__init__()
        self.experiment = experiment
        self.pipeline = None  # db.experiments.Pipeline
        self._shape: tuple = ()
        self.as_tree: bool | None = None  # chosen on the first load (pipeline_tree.prefers_tree), then `t`

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(f"{self.experiment} …", id="pipeline-title", classes="screen-title")
        yield Static("", id="pipeline-info", classes="info-line")
        yield DataTable(id="pipeline-grid", cursor_type="cell")
        tree: Tree = Tree("", id="pipeline-tree")
        tree.display = False
        yield tree
        yield KeyBar()

    def on_mount(self) -> None:
        self.query_one("#pipeline-grid").focus()
        self.query_one("#pipeline-tree", Tree).auto_expand = True
        self.load()

    def load(self) -> None:
        self._load(self.experiment)

    @work(thread=True, exclusive=True, group="pipeline", exit_on_error=False)
    def _load(self, experiment: str) -> None:
        try:
            p = self.app.source.pipeline(experiment)
        except ActionError as e:
            self.post_message(ActionDone(str(e), "warning", changed=False))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(PipelineLoaded(p))

    def on_pipeline_loaded(self, message: PipelineLoaded) -> None:
        self.pipeline = p = message.pipeline
        n = sum(len(js) for js in p.jobs.values())
        title = Text.assemble((p.experiment, "bold"), ("  " + p.description if p.description else "", "dim"))
        self.query_one("#pipeline-title", Static).update(title)
        axes = " × ".join(p.axes) if p.axes else "no matrix"
        self.query_one("#pipeline-info", Static).update(f"{len(p.stages)} stages · {n} jobs · columns {axes}")
        if self.as_tree is None:
            self._show(pipeline_tree.prefers_tree(p))
        self._draw()

    def _show(self, as_tree: bool) -> None:
        self.as_tree = as_tree
        grid, tree = self.query_one("#pipeline-grid", DataTable), self.query_one("#pipeline-tree", Tree)
        grid.display, tree.display = not as_tree, as_tree
        (tree if as_tree else grid).focus()

    def action_toggle_view(self) -> None:
        self._show(not self.as_tree)
        if self.pipeline is not None:
            self._draw()

    def _draw(self) -> None:
        if self.as_tree:
            pipeline_tree.fill(self.query_one("#pipeline-tree", Tree), self.pipeline)
        else:
            self._draw_grid()

    def _draw_grid(self) -> None:
        p = self.pipeline
        table = self.query_one("#pipeline-grid", DataTable)
        depth = max(1, len(p.axes))
        shape = (tuple(p.stages), tuple(p.points), tuple(p.axes))
        row, col = table.cursor_coordinate
        if shape != self._shape:
            self._shape = shape
            table.clear(columns=True)
            table.header_height = depth
            table.add_column("stage", key="stage", width=max(5, *(len(stage_label(s)) for s in p.stages)))
            waits = {s: ", ".join(stage_label(n) for n in p.needs.get(s, [])) for s in p.stages}
            table.add_column("waits on", key="needs", width=max(8, *(len(v) for v in waits.values())))
            used = max(5, *(len(stage_label(s)) for s in p.stages)) + max(8, *map(len, waits.values())) + 5
            for i, lines in enumerate(header_labels(p, (table.outer_size.width or 80) - used)):
                width = max(5, *map(len, lines))
                table.add_column(Text("\n".join(lines), justify="center"), key=f"p{i}", width=width)
        else:
            table.clear()
        for stage in p.stages:
            needs = ", ".join(stage_label(n) for n in p.needs.get(stage, []))
            cells = [Text(stage_label(stage), style="bold"), Text(needs, style="dim")]
            cells += [cell_text(p.cell(stage, point)) for point in p.points]
            table.add_row(*cells, key=stage_label(stage))
        table.move_cursor(row=min(row, len(p.stages) - 1), column=max(2, col), animate=False)

    # ------------------------------------------------------------------ where the cursor is

    def _tree_node(self) -> pipeline_tree.PipelineNode | None:
        node = self.query_one("#pipeline-tree", Tree).cursor_node
        return node.data if node is not None and isinstance(node.data, pipeline_tree.PipelineNode) else None

    def _stage(self):  # noqa: ANN202 - str | None, or False when nothing is shown
        if self.as_tree:
            here = self._tree_node()
            return False if here is None else here.stage
        table = self.query_one("#pipeline-grid", DataTable)
        if self.pipeline is None or not table.row_count:
            return False
        return self.pipeline.stages[table.cursor_coordinate.row]

    def _jobs_here(self) -> list:
        if self.as_tree:
            here = self._tree_node()
            return [] if here is None else list(here.jobs)
        table = self.query_one("#pipeline-grid", DataTable)
        stage = self._stage()
        if stage is False:
            return []
        col = table.cursor_coordinate.column - 2
        if col < 0:
            return list(self.pipeline.jobs.get(stage, []))
        return self.pipeline.cell(stage, self.pipeline.points[col])

    def current_experiment(self) -> str:
        return self.experiment

    # ------------------------------------------------------------------ actions

    def action_open(self) -> None:
        jobs = self._jobs_here()
        if not jobs:
            self.notify("No job in this cell", severity="warning")
            return
        job = min(jobs, key=lambda j: ATTENTION.index(j.status) if j.status in ATTENTION else 99)
        from tui.screens.job_detail import JobDetailScreen

        self.app.push_screen(JobDetailScreen(job.id))

    @on(DataTable.CellSelected, "#pipeline-grid")
    def _cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self.action_open()

    @on(Tree.NodeSelected, "#pipeline-tree")
    def _line_selected(self, event: Tree.NodeSelected) -> None:
        """`enter` on a job's line opens it; on a stage or group it folds or unfolds (the tree's own)."""
        event.stop()
        if not event.node.children and isinstance(event.node.data, pipeline_tree.PipelineNode):
            self.action_open()

    def action_retry_stage(self) -> None:
        stage = self._stage()
        if stage is not False:
            self._write("retry", stage)

    def action_cancel_rest(self) -> None:
        from tui.screens.dialogs import ConfirmScreen

        groups: list[Any] = list(self.pipeline.jobs.values()) if self.pipeline else []
        live = [j for js in groups for j in js if j.status in ("queued", "running")]
        if not live:
            self.notify(f"{self.experiment}: nothing queued or running", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._write("cancel", None)

        self.app.push_screen(ConfirmScreen(
            f"Cancel the {len(live)} queued or running jobs of {escape(self.experiment)}?",  # names may hold [ ]
            "Queued jobs never start; running ones are stopped by the worker (SIGTERM, then SIGKILL)."), answered)

    async def action_results(self) -> None:
        await self.app.run_action(f"show_results({self.experiment!r})")

    @work(thread=True, group="write", exit_on_error=False)
    def _write(self, op: str, stage) -> None:  # noqa: ANN001
        source = self.app.source
        try:
            if op == "retry":
                maps = source.retry_stage(self.experiment, stage)
                new = sum(len(m) for m in maps)
                text = f"stage {stage_label(stage)}: retried {len(maps)} job(s) ({new} queued with the skipped ones)"
            else:
                ids = source.live_jobs(self.experiment)
                done = source.cancel(ids)
                text = f"{self.experiment}: cancelled {sum(1 for _, s in done if s == 'cancelled')}, " \
                       f"stopping {sum(1 for _, s in done if s == 'running')}"
            msg = ActionDone(text)
        except ActionError as e:
            msg = ActionDone(str(e), "warning", changed=False)
        self.post_message(msg)
