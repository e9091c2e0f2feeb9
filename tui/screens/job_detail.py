"""One job: status and timestamps, its GPUs live, progress and ETA, log tail, metric charts, spec,
artifacts; for a failed job, the reason and its last log lines.

Three thread workers feed it: the detail (on open and whenever the store changes), the metric
series (when the chart tab is open and the store changed) and the log tail (every half second
while the job may still write; one `write_lines` per batch into a bounded `Log`).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, SelectionList, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from tui.messages import ActionDone, DetailLoaded, LogLoaded, RunDiskLoaded, SeriesLoaded
from tui.render import (
    STATUS_ICON,
    STATUS_STYLE,
    ago,
    duration,
    number,
    plain_status,
    progress_cell,
    st,
    status_text,
    timestamp,
)
from tui.screens.common import DataScreen, JobActions
from tui.source import ActionError
from tui.widgets.charts import MetricChart
from tui.widgets.gpu_panel import gpu_lines
from tui.widgets.key_bar import KeyBar
from tui.widgets.log_tail import LogTail
from tui.widgets.status_bar import StatusBar

LOG_POLL_S = 0.5
MAX_CHARTS = 3
PREFERRED = ("loss", "train_loss", "eval_loss", "learning_rate", "lr", "tokens_per_s", "tokens/s", "throughput")


def _rel(path: str, home: Path | None) -> str:
    """A path inside the home shown relative to it (shorter, and the same on every machine)."""
    if home is not None:
        try:
            return str(Path(path).relative_to(home))
        except ValueError:
            pass
    return path


def overview_renderable(data, now: float, home: Path | None = None, width: int = 80) -> RenderableType:  # noqa: ANN001, C901
    """The overview tab: everything about the job that fits in a screen."""
    d = data.detail
    r = d.row
    status = plain_status(r.status)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    head = status_text(status)
    if r.attempt > 1:
        head.append(f"  attempt {r.attempt}", style="dim")
    if d.cancel_requested and status == "running":
        head.append("  cancel requested", style=st("yellow"))
    grid.add_row("status", head)
    if status == "queued" and getattr(data, "waiting", None):
        grid.add_row(Text("waiting", style=st("bold yellow")), Text(data.waiting, style=st("yellow")))
    grid.add_row("queued", Text(timestamp(r.queued_at)))
    started = Text(timestamp(r.started_at))
    if r.started_at is not None:
        started.append(f"   elapsed {duration(r.elapsed(now))}", style="dim")
    grid.add_row("started", started)
    grid.add_row("finished", Text(timestamp(r.finished_at)))
    if r.fraction is not None or status == "running":
        prog = progress_cell(r.fraction, min(40, max(12, width - 40)), status) if r.fraction is not None else Text("no progress reported yet", style="dim")
        if r.progress_total:
            prog.append(f"  {number(r.progress_done)}/{number(r.progress_total)}", style="dim")
        if status == "running" and r.eta_s is not None:
            prog.append(f"  ETA {duration(r.eta_s)}", style="bold")
        grid.add_row("progress", prog)
    if d.pid or d.host:
        proc = Text(f"pid {d.pid or '—'} on {d.host or '—'}")
        if d.heartbeat_at and status == "running":
            proc.append(f"  heartbeat {ago(d.heartbeat_at, now)}", style="dim")
        grid.add_row("process", proc)
    if r.gpus_requested:
        grid.add_row("GPUs", Text(f"{r.assigned_gpus or '—'}  ({r.gpus_requested} requested)"))
    else:
        grid.add_row("GPUs", Text("none: runs on the CPU"))
    if r.slurm_job_id:  # run by a Slurm worker: Slurm's own view of the job
        sl = Text(f"job {r.slurm_job_id}  {r.slurm_state or '?'}")
        if r.slurm_reason:
            sl.append(f" ({r.slurm_reason})", style="dim")
        if r.slurm_nodes:
            sl.append(f"  on {r.slurm_nodes}")
        grid.add_row("slurm", sl)
    for label, linked in (("reads from", getattr(data, "upstream", ())), ("read by", getattr(data, "downstream", ()))):
        if linked:
            line = Text()
            for j in linked[:6]:
                if line:
                    line.append(" · ", style="dim")
                line.append(f"#{j.id} {j.name} ")
                line.append(STATUS_ICON.get(j.status, "?"), style=st(STATUS_STYLE.get(j.status, "")))
            if len(linked) > 6:
                line.append(f" · … {len(linked) - 6} more (L lists them)", style="dim")
            grid.add_row(label, line)
    if d.depends_on and not getattr(data, "upstream", ()):
        grid.add_row("after", Text(", ".join(f"#{i}" for i in d.depends_on)))
    if d.parent_id:
        grid.add_row("retry of", Text(f"#{d.parent_id}"))
    if d.run_dir:
        grid.add_row("log", Text(_rel(f"{d.run_dir}/log.txt", home)))
    if d.metrics:
        m = Text()
        for name, v in sorted(d.metrics.items()):
            if m:
                m.append(" · ", style="dim")
            m.append(f"{name} ", style="dim")
            m.append(number(v))
        grid.add_row("metrics", m)
    if r.failure_reason:
        grid.add_row(Text("reason", style=st("bold red")), Text(f"{r.failure_reason}: {d.failure_detail}", style=st("red")))
    parts: list[RenderableType] = [grid]
    if data.gpus:
        parts.append(Text(""))
        for g in data.gpus:
            parts += gpu_lines(g, {r.id: r.name}, width - 4, highlight_job=r.id)
    if d.log_tail and status in ("failed", "interrupted", "cancelled"):
        parts += [Text(""), Text("last log lines", style="bold"), Text(d.log_tail, style="dim")]
    return Group(*parts)


def spec_renderable(spec: dict) -> RenderableType:
    import yaml

    return Text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True).rstrip())


class JobDetailScreen(JobActions, DataScreen):
    DEFAULT_CSS = """
    #detail-tabs {
        height: 1fr;
    }

    #detail-tabs TabPane {
        padding: 0 1;
    }

    #detail-overview, #detail-spec {
        height: auto;
    }

    #metrics-pane {
        height: 1fr;
    }

    #metric-list {
        width: 24;
        height: 1fr;
        margin-right: 1;
    }

    #charts {
        width: 1fr;
        height: 1fr;
    }
    """

    BINDINGS = [
        Binding("escape", "back", "Back", id="detail.back"),
        Binding("o", "tab('overview')", "Overview", show=False, id="detail.overview"),
        Binding("l", "tab('log')", "Log", id="detail.log"),
        Binding("g", "tab('metrics')", "Charts", id="detail.charts"),
        Binding("s", "tab('spec')", "Spec", id="detail.spec"),
        Binding("a", "tab('artifacts')", "Artifacts", show=False, id="detail.artifacts"),
        Binding("m", "smooth", "Smoothing (EMA)", show=False, id="detail.smooth"),
        Binding("L", "lineage", "Lineage", show=False, id="detail.lineage", tooltip="jobs it read from and that read it"),
        Binding("E", "evaluate", "Evaluate this checkpoint", show=False, id="detail.evaluate"),
        Binding("c", "cancel", "Cancel", id="detail.cancel"),
        Binding("r", "retry", "Retry", show=False, id="detail.retry"),
        Binding("d", "duplicate", "Duplicate", show=False, id="detail.duplicate"),
        Binding("plus", "priority(1)", "Priority up", show=False, id="detail.priority_up"),
        Binding("minus", "priority(-1)", "Priority down", show=False, id="detail.priority_down"),
    ]

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.data = None  # tui.source.DetailData
        self._series_version = -1
        self.smoothing = 0.0
        self._log_busy = False
        self._disk_key: tuple | None = None  # what the run folder was last measured at (_disk_state)

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(f"job {self.job_id}", id="detail-title", classes="screen-title")
        with TabbedContent(initial="overview", id="detail-tabs"):
            with TabPane("Overview", id="overview"):
                with VerticalScroll():
                    yield Static(id="detail-overview")
            with TabPane("Log", id="log"):
                yield LogTail(id="detail-log")
            with TabPane("Charts", id="metrics"):
                with Horizontal(id="metrics-pane"):
                    yield SelectionList[str](id="metric-list", compact=True)
                    with VerticalScroll(id="charts"):
                        for i in range(MAX_CHARTS):
                            yield MetricChart(id=f"chart-{i}", classes="hidden")
            with TabPane("Spec", id="spec"):
                with VerticalScroll():
                    yield Static(id="detail-spec")
            with TabPane("Artifacts", id="artifacts"):
                yield Static("run folder …", id="detail-disk")
                yield DataTable(id="detail-artifacts", cursor_type="row")
        yield KeyBar()

    def on_mount(self) -> None:
        self.watch(self.app, "now", self._clock, init=False)
        table = self.query_one("#detail-artifacts", DataTable)
        table.add_column("kind", key="kind")
        table.add_column("path", key="path")
        table.add_column("created", key="created")
        self.load()
        self.set_interval(LOG_POLL_S, self._poll_log)

    # ------------------------------------------------------------------ loading


    def _clock(self, _now: float) -> None:
        if self.is_current and self.data is not None and plain_status(self.data.detail.row.status) == "running":
            self._render_overview()

    def load(self) -> None:
        self._load(self.job_id)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _load(self, job_id: int) -> None:
        try:
            data = self.app.source.detail(job_id)
        except ActionError as e:
            self.post_message(ActionDone(str(e), severity="warning", changed=False))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(DetailLoaded(data))

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        first = self.data is None
        self.data = message.data
        d = self.data.detail
        r = d.row
        title = Text.assemble(("job ", "bold"), (str(r.id), "bold"), "  ", (r.experiment, ""), " / ", (r.name, "bold"),
                              "  ", (r.kind, "dim"), "  ", status_text(r.status))
        self.query_one("#detail-title", Static).update(title)
        self._render_overview()
        self.query_one("#detail-spec", Static).update(spec_renderable(d.spec))
        self._fill_artifacts()
        self._fill_metric_list(first)
        log = self.query_one(LogTail)
        log.follow(f"{d.run_dir}/log.txt" if d.run_dir else None)
        if first:
            self._poll_log(force=True)
        if self._active_tab() == "metrics":
            self._load_series()
        elif self._active_tab() == "artifacts" and self._disk_key != self._disk_state():
            self._measure_disk()

    def _disk_state(self) -> tuple:
        """What the run folder's size follows: the status and the artifacts (a prune changes them)."""
        d = self.data.detail if self.data is not None else None
        return () if d is None else (plain_status(d.row.status), tuple((a.path, "pruned_at" in a.meta) for a in d.artifacts))

    def _measure_disk(self) -> None:
        if self.data is not None:
            self._disk_key = self._disk_state()
            self._read_disk(self.data.detail.run_dir)

    @work(thread=True, exclusive=True, group="detail-disk", exit_on_error=False)
    def _read_disk(self, run_dir: str) -> None:
        sizes = self.app.source.run_disk(run_dir)
        if not get_current_worker().is_cancelled:
            self.post_message(RunDiskLoaded(sizes))

    def on_run_disk_loaded(self, message: RunDiskLoaded) -> None:
        from tui.render import size_text

        d = self.data.detail if self.data is not None else None
        where = _rel(d.run_dir, self.app.source.open_home) if d is not None and d.run_dir else "no run folder yet"
        z = message.sizes
        line = Text.assemble(("run folder ", "dim"), where, "  ", (size_text(z["total"]), "bold"), " on disk")
        if z["total"]:
            line.append(f"  (checkpoints {size_text(z['checkpoints'])}, outputs {size_text(z['outputs'])})",
                        style="dim")
        self.query_one("#detail-disk", Static).update(line)

    def _render_overview(self) -> None:
        if self.data is None:
            return
        home = self.app.source.open_home
        width = self.query_one("#detail-overview").size.width or 78
        self.query_one("#detail-overview", Static).update(overview_renderable(self.data, self.app.now, home, width))

    def _fill_artifacts(self) -> None:
        table = self.query_one("#detail-artifacts", DataTable)
        table.clear()
        for i, a in enumerate(self.data.detail.artifacts):
            shown = _rel(a.path, self.app.source.open_home)
            path = Text.assemble(("pruned (weights deleted)  ", "bold"), shown) if "pruned_at" in a.meta else Text(shown)
            table.add_row(Text(a.kind), path, Text(timestamp(a.created_at)), key=str(i))

    def _fill_metric_list(self, first: bool) -> None:
        sl = self.query_one("#metric-list", SelectionList)
        names = list(self.data.metric_names)
        current = [str(o.value) for o in sl.options]
        if names == current:
            return
        chosen = set(sl.selected) if not first else set(_default_metrics(names))
        sl.clear_options()
        sl.add_options([(n, n, n in chosen) for n in names])

    # ------------------------------------------------------------------ metrics

    def _active_tab(self) -> str:
        return self.query_one(TabbedContent).active

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if self._active_tab() == "metrics":
            self._load_series()
        elif self._active_tab() == "log":
            self._poll_log(force=True)
        elif self._active_tab() == "artifacts":
            self._measure_disk()

    @on(SelectionList.SelectedChanged, "#metric-list")
    def _metrics_chosen(self) -> None:
        self._series_version = -1
        self._load_series()

    def _load_series(self) -> None:
        if self.data is None:
            return
        version = self.app.data_version
        names = _ordered(self.query_one("#metric-list", SelectionList).selected)[:MAX_CHARTS]
        key = (version, tuple(names))
        if key == self._series_version:
            return
        self._series_version = key
        self._fetch_series(self.job_id, names)

    @work(thread=True, exclusive=True, group="series", exit_on_error=False)
    def _fetch_series(self, job_id: int, names: list[str]) -> None:
        series = self.app.source.series(job_id, names)
        if not get_current_worker().is_cancelled:
            self.post_message(SeriesLoaded(job_id, series))

    def action_lineage(self) -> None:
        """Choose a job this one read from or that read its outputs, and open it."""
        from tui.screens.dialogs import ChoiceScreen

        data = self.data
        if data is None or not (data.upstream or data.downstream):
            self.notify("No lineage: this job neither read from nor fed another job", severity="warning")
            return
        options = [(f"reads from  #{j.id} {j.name} ({j.status})", j.id) for j in data.upstream]
        options += [(f"read by     #{j.id} {j.name} ({j.status})", j.id) for j in data.downstream]

        def chosen(job_id: int | None) -> None:
            if job_id is not None:
                self.app.push_screen(JobDetailScreen(job_id))

        self.app.push_screen(ChoiceScreen(f"Lineage of job {self.job_id}", options), chosen)

    def action_evaluate(self) -> None:
        """A generate job on this job's model, prefilled in the composer (then a score job on its answers)."""
        data = self.data
        if data is None:
            return
        d = data.detail
        if d.row.kind not in ("finetune", "merge") or plain_status(d.row.status) != "succeeded":
            self.notify("Only a finished fine-tune or merge has a checkpoint to evaluate", severity="warning")
            return
        if any(a.kind == "model" and "pruned_at" in a.meta for a in d.artifacts):
            self.notify("This job's model was pruned (labdeck prune deleted its weights)", severity="warning")
            return
        model = next((a.path for a in d.artifacts if a.kind == "model"), "outputs/model")
        if d.run_dir and not model.startswith("/"):
            model = f"{d.run_dir}/{model}"
        spec = {"kind": "generate", "experiment": d.row.experiment, "name": f"eval-{d.row.id}", "model": model}
        self.app.open_new_job(spec, f"Evaluate job {d.row.id}")

    def action_smooth(self) -> None:
        """Cycle the charts' EMA smoothing: off, 0.6, 0.9, 0.99."""
        from tui.widgets.charts import SMOOTHING

        self.smoothing = SMOOTHING[(SMOOTHING.index(self.smoothing) + 1) % len(SMOOTHING)]
        for chart in self.query(MetricChart):
            chart.set_smoothing(self.smoothing)
        self.notify(f"Chart smoothing: {'off' if not self.smoothing else f'EMA {self.smoothing:g}'}", timeout=1.5)

    def on_series_loaded(self, message: SeriesLoaded) -> None:
        charts = list(self.query(MetricChart))
        items = list(message.series.items())
        for i, chart in enumerate(charts):
            if i < len(items):
                chart.remove_class("hidden")
                chart.smoothing = self.smoothing
                chart.show(dict([items[i]]))
            else:
                chart.add_class("hidden")

    # ------------------------------------------------------------------ log

    def _poll_log(self, force: bool = False) -> None:
        log = self.query_one(LogTail)
        if log.path is None or self._log_busy or self.data is None:
            return
        running = plain_status(self.data.detail.row.status) in ("running", "queued")
        if not (force or running or log.read_offset is None):
            return
        self._log_busy = True
        self._read_log(log.path, log.read_offset)

    @work(thread=True, exclusive=True, group="log", exit_on_error=False)
    def _read_log(self, path: str, offset: int | None) -> None:
        try:
            chunk = self.app.source.read_log(path, offset)
        finally:
            self._log_busy = False
        self.post_message(LogLoaded(chunk))

    def on_log_loaded(self, message: LogLoaded) -> None:
        self.query_one(LogTail).add_chunk(message.chunk)

    # ------------------------------------------------------------------ actions

    def selected_ids(self) -> list[int]:
        return [self.job_id]

    def current_experiment(self) -> str | None:
        return self.data.detail.row.experiment if self.data is not None else None

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        focus = {"log": "#detail-log", "metrics": "#metric-list", "artifacts": "#detail-artifacts"}.get(tab)
        if focus:
            self.query_one(focus).focus()


def _ordered(names: list[str]) -> list[str]:
    """Loss first, then learning rate, then throughput, then the rest by name."""
    return sorted(names, key=lambda n: (PREFERRED.index(n) if n in PREFERRED else len(PREFERRED), n))


def _default_metrics(names: list[str]) -> list[str]:
    picked = [n for n in PREFERRED if n in names]
    for n in names:
        if len(picked) >= MAX_CHARTS:
            break
        if n not in picked:
            picked.append(n)
    return picked[:MAX_CHARTS]
