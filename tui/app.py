"""The terminal app: wiring only.

`LabdeckApp` receives its data source (a `tui.source.Source`: the user's home in real life, a
temporary one with a frozen clock in tests), polls it about once a second in a thread worker,
and publishes what it read as reactives (`overview`, `data_version`, `now`) that screens watch.
Screens own their own loading and actions; see docs/tui.md for the map.

Imported for `labdeck` with no arguments, so it imports Textual and the jobs screen only: the
store, the spec classes and the other screens load in worker threads or when first opened.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

# Over SSH every frame costs bandwidth: cap the frame rate and skip animations, unless the
# person set these themselves. Read by Textual when it is first imported, hence before it.
os.environ.setdefault("TEXTUAL_FPS", "30")
os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from textual import work  # noqa: E402
from textual.app import App  # noqa: E402
from textual.binding import Binding  # noqa: E402
from textual.reactive import reactive  # noqa: E402
from textual.screen import Screen  # noqa: E402
from textual.worker import Worker, WorkerState, get_current_worker  # noqa: E402

from tui.commands import LabdeckCommands  # noqa: E402
from tui.messages import ActionDone, Polled  # noqa: E402
from tui.notify import EndWatch, notify_terminal  # noqa: E402
from tui.render import use_color  # noqa: E402
from tui.screens.jobs import JobsScreen  # noqa: E402
from tui.source import Source  # noqa: E402

# Ticks between re-reads of the overview when nothing was committed: a safety net only. Worker
# liveness needs no read: the status line ages the last heartbeat with the clock.
FULL_POLL_EVERY = 30


def _results_screen() -> Screen:
    from tui.screens.results import ResultsScreen

    return ResultsScreen()


def _experiments_screen() -> Screen:
    from tui.screens.experiments import ExperimentsScreen

    return ExperimentsScreen()


def _gpus_screen() -> Screen:
    from tui.screens.gpus import GpusScreen

    return GpusScreen()


class LabdeckApp(App[int]):
    """Queue, watch and review experiments from the keyboard."""

    CSS_PATH = "app.tcss"
    TITLE = "labdeck"
    COMMANDS = App.COMMANDS | {LabdeckCommands}
    SCREENS = {"jobs-screen": JobsScreen}  # installed, so `get_screen` finds the one instance
    MODES = {"jobs": "jobs-screen", "results": _results_screen, "gpus": _gpus_screen, "experiments": _experiments_screen}
    DEFAULT_MODE = "jobs"

    BINDINGS = [
        Binding("n", "new_job", "New job", id="app.new_job"),
        Binding("e", "show_experiments", "Experiments", id="app.experiments"),
        Binding("2", "show_results", "Results", id="app.results"),
        Binding("3", "show_gpus", "GPUs", id="app.gpus"),
        Binding("1", "show_jobs", "Jobs", show=False, id="app.jobs"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Leave the app; the worker and its jobs keep running"),
        Binding("p", "toggle_pause", "Pause/resume queue", show=False, id="app.pause"),
        Binding("D", "drain", "Drain queue", show=False, id="app.drain"),
        Binding("ctrl+r", "reload", "Reload now", show=False, id="app.reload"),
    ]

    overview: reactive[Any] = reactive(None, always_update=True)
    data_version: reactive[int] = reactive(0)
    now: reactive[float] = reactive(0.0)

    def __init__(
        self, source: Source, *, start_worker: bool = True, refresh_s: float = 1.0, results: dict[str, str] | None = None
    ) -> None:
        super().__init__()
        self.initial_results = results  # open the results screen on this view (experiment, metric, rows, cols)
        use_color(not self.no_color)
        self.source = source
        self.start_worker = start_worker
        self.refresh_s = refresh_s
        self._fingerprint: tuple[int, ...] | None = None
        self._ticks = 0
        self._polling = False
        self._warmed = False
        self._ends = EndWatch()  # jobs and experiments that end while the app is open raise a terminal notification

    # ------------------------------------------------------------------ lifecycle

    def on_mount(self) -> None:
        self.now = self.source.clock()
        # After the first frame: the first poll imports and opens the store (a third of a second
        # of CPU), which would otherwise compete with painting that frame for the GIL.
        self.call_after_refresh(self._start)

    def _start(self) -> None:
        self._polling = True
        self.poll(force=True)
        if self.start_worker:
            self.ensure_worker()
        if self.refresh_s > 0:
            self.set_interval(self.refresh_s, self._tick)
        if self.initial_results:
            self.call_later(self._open_initial_results)

    async def _open_initial_results(self) -> None:
        view = dict(self.initial_results or {})
        await self.switch_mode("results")
        self.screen.choose(view.pop("experiment"), **view)  # type: ignore[attr-defined]

    def _tick(self) -> None:
        self._ticks += 1
        self.now = self.source.clock()
        if not self._polling:  # a slow store never gets a second poll stacked on the first
            self._polling = True
            self.poll(force=self._ticks % FULL_POLL_EVERY == 0)

    @work(thread=True, exclusive=True, group="poll", exit_on_error=False)
    def poll(self, force: bool = False) -> None:
        """Read the overview if anything was committed since the last poll (or if forced)."""
        fp = self.source.fingerprint()
        changed = fp != self._fingerprint
        overview = self.source.overview() if (changed or force) else None
        if changed and self._fingerprint:  # not on the first poll: the cold start opens no store
            for notice in self._ends.check(self.source.store):
                self.call_from_thread(notify_terminal, self, notice)
        if not get_current_worker().is_cancelled:
            self.post_message(Polled(fp, overview, changed))

    def on_polled(self, message: Polled) -> None:
        self._polling = False
        if message.overview is not None:
            self.overview = message.overview
        if message.changed:
            self._fingerprint = message.fingerprint
            self.data_version += 1

    def warm_up(self) -> None:
        """After the first screenful: open the store and import the other screens, off the loop."""
        if not self._warmed:
            self._warmed = True
            self.set_timer(0.05, self._warm_up)  # just after the frame that shows the first jobs

    @work(thread=True, group="warm-up", exit_on_error=False)
    def _warm_up(self) -> None:
        self.source.warm_up()
        import db.results  # noqa: F401
        import tui.screens.experiments  # noqa: F401
        import tui.screens.job_detail  # noqa: F401
        import tui.screens.new_job  # noqa: F401
        import tui.screens.pipeline  # noqa: F401
        import tui.screens.results  # noqa: F401

    def action_reload(self) -> None:
        self._fingerprint = None
        self.poll(force=True)

    @work(thread=True, group="start-worker", exit_on_error=False)
    def ensure_worker(self) -> None:
        try:
            started = self.source.ensure_worker()
        except NotImplementedError as e:
            self.post_message(ActionDone(f"No worker started ({e}); jobs stay queued until one runs", "warning", False))
            return
        except Exception as e:  # noqa: BLE001 - any failure to start is a notice, never a crash
            self.post_message(ActionDone(f"Could not start a worker: {e}", "error", False))
            return
        if not started:
            self.post_message(ActionDone("No worker is running; jobs stay queued", "warning", False))

    def on_action_done(self, message: ActionDone) -> None:
        self.notify(message.text, severity=message.severity, timeout=4 if message.severity == "information" else 8)  # type: ignore[arg-type]
        if message.select_id is not None:
            self.select_job(message.select_id)
        if message.changed:
            self.action_reload()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.report_worker_error(event.worker)

    def report_worker_error(self, worker: Worker) -> None:
        """Every unexpected failure of a thread worker ends here, as one notice; the app goes on."""
        if worker.group == "poll":
            self._polling = False
        error = worker.error
        what = worker.group.replace("-", " ")
        self.notify(f"{what} failed: {type(error).__name__}: {error}", title="labdeck", severity="error", timeout=8)

    # ------------------------------------------------------------------ navigation

    def jobs_screen(self) -> JobsScreen:
        return self.get_screen("jobs-screen")  # type: ignore[return-value]

    def select_job(self, job_id: int) -> None:
        """The one route to "show this job": after a submit, a retry or a duplicate."""
        self.jobs_screen().select_job(job_id)

    async def action_show_jobs(self) -> None:
        await self.switch_mode("jobs")

    async def action_show_results(self, experiment: str | None = None) -> None:
        if experiment is None:
            current = getattr(self.screen, "current_experiment", None)
            experiment = current() if callable(current) else None
        await self.switch_mode("results")
        if experiment:
            self.screen.choose(experiment)  # type: ignore[attr-defined]

    async def action_show_experiments(self) -> None:
        await self.switch_mode("experiments")

    async def action_show_gpus(self) -> None:
        await self.switch_mode("gpus")

    def open_job(self, job_id: int) -> None:
        from tui.screens.job_detail import JobDetailScreen

        if self.current_mode != "jobs":
            self.switch_mode("jobs")
        self.push_screen(JobDetailScreen(job_id))

    def action_new_job(self) -> None:
        if type(self.screen).__name__ != "NewJobScreen":  # not a form on top of a form
            self.open_new_job(None, "New job")

    def open_new_job(self, spec: dict[str, Any] | None, title: str) -> None:
        from tui.screens.new_job import NewJobScreen

        self.push_screen(NewJobScreen(spec, title))  # it reports the ids it queued with ActionDone(select_id=...)

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    # ------------------------------------------------------------------ queue state

    def action_toggle_pause(self) -> None:
        state = self.overview.worker.queue_state if self.overview is not None else "running"
        self.set_queue("running" if state != "running" else "paused")

    def action_drain(self) -> None:
        self.set_queue("draining")

    @work(thread=True, group="write", exit_on_error=False)
    def set_queue(self, state: str) -> None:
        self.source.set_queue_state(state)
        words = {"running": "Queue resumed: the worker starts queued jobs",
                 "paused": "Queue paused: nothing new starts (p resumes)",
                 "draining": "Queue draining: running jobs finish, nothing new starts (p resumes)"}
        self.post_message(ActionDone(words[state]))


def run_app(home: Path | str | None = None, *, start_worker: bool = True, results: dict[str, str] | None = None) -> int:
    """`labdeck` with no command: open the app on `home`; the exit status.

    `results` opens the results screen on a view, e.g. {"experiment": "demo-car", "metric": "win_rate",
    "rows": "student", "cols": "teacher"} (what `labdeck demo` shows).
    """
    refresh = float(os.environ.get("LABDECK_REFRESH_S", "1.0") or 1.0)
    app = LabdeckApp(Source(home, clock=time.time), start_worker=start_worker, refresh_s=refresh, results=results)
    app.run()
    return app.return_code or 0
