"""The experiments screen's housekeeping keys: archive or restore, show the archived, delete one whole.

A mixin of `ExperimentsScreen`, kept apart so the screen stays about listing. Every read and write
runs in a thread worker through the app's `Source` (the client layer, shared with `labdeck
archive` and `labdeck rm -e`); a refusal (live jobs) is one warning line. Deleting asks first, naming
the job count and the disk it frees, which a worker measures before the dialog opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.markup import escape
from textual import work
from textual.message import Message

from client import ClientError as ActionError
from tui.messages import ActionDone
from tui.render import size_text


@dataclass
class DeletionPlanned(Message):
    """What deleting an experiment would remove (db.housekeeping.ExperimentDeletion) and its bytes."""

    plan: Any
    size: int


def bytes_text(n: int) -> str:
    """12.3MB, 512 bytes."""
    return f"{n} bytes" if n < 1024 else f"{size_text(n)}B"


def deletion_question(plan: Any, size: int) -> tuple[str, str]:
    """The confirmation's title and detail: what goes, how much disk it frees."""
    n = len(plan.job_ids)
    detail = (f"{n} job{'s' if n != 1 else ''} with {'their' if n != 1 else 'its'} metrics, artifacts and run folders "
              f"(checkpoints, outputs): frees {bytes_text(size)}. This cannot be undone; "
              f"[b]a[/b] archives instead (hidden, kept on disk).")
    return f"Delete experiment {escape(plan.name)}?", detail


class ExperimentActions:
    """Mixed into `ExperimentsScreen`: needs `current_experiment()`, `page`, `load()` and `show_archived`."""

    show_archived: bool

    def _row(self, name: str) -> Any:
        page = getattr(self, "page", None)
        return next((r for r in (page.rows if page is not None else ()) if r.name == name), None)

    # ------------------------------------------------------------------ archive

    def action_archive(self) -> None:
        exp = self.current_experiment()  # type: ignore[attr-defined]
        if exp:
            row = self._row(exp)
            self._archive(exp, restore=row is not None and row.archived_at is not None)

    @work(thread=True, group="write", exit_on_error=False)
    def _archive(self, experiment: str, restore: bool) -> None:
        try:
            changed = self.app.source.archive(experiment, restore)  # type: ignore[attr-defined]
        except ActionError as e:
            self.post_message(ActionDone(str(e), severity="warning", changed=False))  # type: ignore[attr-defined]
            return
        if restore:
            text = f"restored {experiment}" if changed else f"{experiment} was not archived"
        else:
            text = (f"archived {experiment}: hidden from the lists, kept on disk (A shows archived, a restores)"
                    if changed else f"{experiment} was already archived")
        self.post_message(ActionDone(text, changed=changed))  # type: ignore[attr-defined]

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
        self.notify("showing archived experiments too" if self.show_archived else "archived experiments hidden",  # type: ignore[attr-defined]
                    timeout=2)
        self.load()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ delete

    def action_delete_experiment(self) -> None:
        exp = self.current_experiment()  # type: ignore[attr-defined]
        if exp:
            self._plan_deletion(exp)

    @work(thread=True, exclusive=True, group="experiments-delete", exit_on_error=False)
    def _plan_deletion(self, experiment: str) -> None:
        try:
            plan, size = self.app.source.deletion_plan(experiment)  # type: ignore[attr-defined]
        except ActionError as e:
            self.post_message(ActionDone(str(e), severity="warning", changed=False))  # type: ignore[attr-defined]
            return
        if plan.refusal:
            self.post_message(ActionDone(plan.refusal, severity="warning", changed=False))  # type: ignore[attr-defined]
            return
        self.post_message(DeletionPlanned(plan, size))  # type: ignore[attr-defined]

    def on_deletion_planned(self, message: DeletionPlanned) -> None:
        from tui.screens.dialogs import ConfirmScreen

        message.stop()
        title, detail = deletion_question(message.plan, message.size)

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(message.plan.name, message.size)

        self.app.push_screen(ConfirmScreen(title, detail), answered)  # type: ignore[attr-defined]

    @work(thread=True, group="write", exit_on_error=False)
    def _delete(self, experiment: str, size: int) -> None:
        try:
            ids = self.app.source.delete_experiment(experiment)  # type: ignore[attr-defined]
        except ActionError as e:
            self.post_message(ActionDone(str(e), severity="warning", changed=False))  # type: ignore[attr-defined]
            return
        n = len(ids)
        self.post_message(ActionDone(f"deleted {experiment}: {n} job{'s' if n != 1 else ''}, "  # type: ignore[attr-defined]
                                     f"{bytes_text(size)} freed"))
