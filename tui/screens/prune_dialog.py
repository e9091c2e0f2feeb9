"""The experiments screen's `K`: keep the best N fine-tunes by a metric, asked in a small dialog.

Three fields (how many to keep, the metric with completion over the experiment's metric names, and
which direction is better, guessed from the name as `labdeck prune` does); enter makes a dry-run plan
in a worker, and a confirmation names what is kept, what goes and the disk it frees before anything
is deleted (`db.prune` through the client layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Static

from client import ClientError as ActionError
from tui.messages import ActionDone
from tui.screens.dialogs import Dialog


@dataclass
class PruneChoices(Message):
    experiment: str
    metrics: list[str]


@dataclass
class PrunePlanned(Message):
    plan: Any  # db.prune.PrunePlan
    request: tuple[int, str, str]


def default_metric(names: list[str]) -> str:
    for preferred in ("eval_loss", "final_loss", "loss"):
        if preferred in names:
            return preferred
    return names[0] if names else ""


class PruneScreen(Dialog, ModalScreen[tuple[int, str, str] | None]):
    """keep N / metric / min|max; enter plans, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prune.cancel")]

    def __init__(self, experiment: str, metrics: list[str]) -> None:
        super().__init__()
        self.experiment = experiment
        self.metrics = metrics

    def compose(self) -> ComposeResult:
        from db.prune import guess_mode

        metric = default_metric(self.metrics)
        with Vertical(classes="dialog"):
            yield Label(f"Keep the best fine-tunes of {escape(self.experiment)}", classes="dialog-title")
            yield Static("keep the best", classes="dialog-detail")
            yield Input("3", id="prune-keep", compact=True, type="integer")
            yield Static("by the final value of", classes="dialog-detail")
            yield Input(metric, id="prune-metric", compact=True, select_on_focus=False,
                        suggester=SuggestFromList(self.metrics, case_sensitive=False))
            yield Static("better is (min or max)", classes="dialog-detail")
            yield Input(guess_mode(metric) or "", id="prune-mode", compact=True)
            yield Static("The others lose their model folders and checkpoints; rows and metrics stay.\n"
                         "[b]enter[/b] preview    [b]tab[/b] next field    [b]escape[/b] cancel", classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#prune-keep", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "prune-metric":
            from db.prune import guess_mode

            guess = guess_mode(event.value)
            if guess:
                self.query_one("#prune-mode", Input).value = guess

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        keep = self.query_one("#prune-keep", Input).value.strip()
        metric = self.query_one("#prune-metric", Input).value.strip()
        mode = self.query_one("#prune-mode", Input).value.strip().lower()
        if not keep.isdigit() or int(keep) < 1:
            self.notify("keep: a whole number, at least 1", severity="warning")
        elif not metric:
            self.notify("metric: which metric ranks the fine-tunes", severity="warning")
        elif mode not in ("min", "max"):
            self.notify(f"better is: min (a lower {metric} is better) or max", severity="warning")
        else:
            self.dismiss((int(keep), metric, mode))

    def action_cancel(self) -> None:
        self.dismiss(None)


def plan_text(plan: Any) -> str:
    """The confirmation's detail: kept and pruned jobs with their values, and the bytes freed."""
    from tui.screens.experiment_actions import bytes_text

    def val(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    metric = escape(plan.metric)  # the detail is markup: job names hold brackets (sft[lr=2e-05])
    lines = [f"keep   #{i.id} {escape(i.name)}  {metric} {val(i.value)}" for i in plan.keep[:6]]
    lines += [f"prune  #{i.id} {escape(i.name)}  {metric} {val(i.value)}  {bytes_text(i.bytes)}" for i in plan.prune[:8]]
    if len(plan.prune) > 8:
        lines.append(f"… and {len(plan.prune) - 8} more")
    skipped = [i for i in plan.skipped if i.value is not None or "no " in i.note]
    if skipped:
        lines.append(f"left alone: {len(skipped)} ({escape(skipped[0].note)})")
    lines.append(f"frees {bytes_text(plan.bytes)}; rows and metrics stay, the artifacts say pruned.")
    return "\n".join(lines)


class PruneActions:
    """Mixed into `ExperimentsScreen` with `ExperimentActions`: `K` asks, plans, confirms, prunes."""

    def action_prune(self) -> None:
        exp = self.current_experiment()  # type: ignore[attr-defined]
        if exp:
            self._prune_choices(exp)

    @work(thread=True, exclusive=True, group="experiments-prune", exit_on_error=False)
    def _prune_choices(self, experiment: str) -> None:
        names = self.app.source.metric_names_of(experiment)  # type: ignore[attr-defined]
        self.post_message(PruneChoices(experiment, names))  # type: ignore[attr-defined]

    def on_prune_choices(self, message: PruneChoices) -> None:
        message.stop()
        experiment = message.experiment

        def chosen(request: tuple[int, str, str] | None) -> None:
            if request is not None:
                self._prune_plan(experiment, request)

        self.app.push_screen(PruneScreen(experiment, message.metrics), chosen)  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="experiments-prune", exit_on_error=False)
    def _prune_plan(self, experiment: str, request: tuple[int, str, str]) -> None:
        try:
            plan = self.app.source.prune(experiment, *request, dry_run=True)  # type: ignore[attr-defined]
        except ActionError as e:
            self.post_message(ActionDone(str(e), severity="warning", changed=False))  # type: ignore[attr-defined]
            return
        if not plan.prune:
            n = len(plan.keep) + len(plan.skipped)
            self.post_message(ActionDone(f"{experiment}: nothing to prune among {n} finished fine-tune(s) "  # type: ignore[attr-defined]
                                         f"(best {request[0]} by {request[1]} kept)", changed=False))
            return
        self.post_message(PrunePlanned(plan, request))  # type: ignore[attr-defined]

    def on_prune_planned(self, message: PrunePlanned) -> None:
        from tui.screens.dialogs import ConfirmScreen

        message.stop()
        plan = message.plan

        def answered(yes: bool | None) -> None:
            if yes:
                self._prune(plan.experiment, message.request)

        n = len(plan.prune)
        self.app.push_screen(ConfirmScreen(  # type: ignore[attr-defined]
            f"Delete the weights of {n} fine-tune{'s' if n != 1 else ''} of {escape(plan.experiment)}?", plan_text(plan)),
            answered)

    @work(thread=True, group="write", exit_on_error=False)
    def _prune(self, experiment: str, request: tuple[int, str, str]) -> None:
        from tui.screens.experiment_actions import bytes_text

        try:
            plan = self.app.source.prune(experiment, *request)  # type: ignore[attr-defined]
        except ActionError as e:
            self.post_message(ActionDone(str(e), severity="warning", changed=False))  # type: ignore[attr-defined]
            return
        self.post_message(ActionDone(f"pruned {len(plan.prune)} fine-tune(s) of {experiment}: "  # type: ignore[attr-defined]
                                     f"{bytes_text(plan.bytes)} freed"))
