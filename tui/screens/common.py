"""What the jobs list and the job detail share: the job actions, each a thin thread-worker shell.

Every write goes through `Source` in a thread worker that posts one `ActionDone`; the app shows
its text as a notice and polls the store at once, so the screen shows the change within a frame
or two. A refused action (cancel a finished job, retry a running one) is a warning, not an error.
"""

from __future__ import annotations

from textual import work
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

from tui.messages import ActionDone, SpecsLoaded
from tui.source import ActionError


def ids_label(ids: list[int]) -> str:
    if len(ids) == 1:
        return f"job {ids[0]}"
    shown = ", ".join(map(str, ids[:6]))
    return f"{len(ids)} jobs ({shown}{', …' if len(ids) > 6 else ''})"


class DataScreen(Screen):
    """A screen that reloads when the store changed (only while it is shown) and reports failures.

    Subclasses implement `load()`. `Worker.StateChanged` does not bubble, so each screen passes
    its workers' unexpected errors to the app, which shows one notice and carries on.
    """

    _stale = False

    def on_mount(self) -> None:
        self.watch(self.app, "data_version", self._data_changed, init=False)

    def load(self) -> None:  # pragma: no cover - every screen overrides it
        raise NotImplementedError

    def _data_changed(self, _version: int) -> None:
        if self.is_current:
            self.load()
        else:
            self._stale = True

    def on_screen_resume(self) -> None:
        if self._stale:
            self._stale = False
            self.load()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.report_worker_error(event.worker)  # type: ignore[attr-defined]


class JobActions:
    """Mixed into a Screen that can say which jobs the person means (`selected_ids`)."""

    def selected_ids(self) -> list[int]:  # pragma: no cover - every screen overrides it
        raise NotImplementedError

    def _need_ids(self) -> list[int]:
        ids = self.selected_ids()
        if not ids:
            self.notify("No job selected", severity="warning")  # type: ignore[attr-defined]
        return ids

    def action_cancel(self) -> None:
        self._confirm_then("cancel", "Cancel",
                           "A queued job never starts; a running one is stopped by the worker (SIGTERM, then SIGKILL).")

    def action_delete(self) -> None:
        self._confirm_then("delete", "Delete",
                           "Finished jobs only: their metrics, artifacts and run folders (checkpoints, outputs) are removed.")

    def _confirm_then(self, op: str, verb: str, consequence: str) -> None:
        """Ask before a write that cannot be undone, then run it on the selected jobs."""
        from tui.screens.dialogs import ConfirmScreen

        ids = self._need_ids()
        if not ids:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_write(op, ids)

        self.app.push_screen(ConfirmScreen(f"{verb} {ids_label(ids)}?", consequence), answered)  # type: ignore[attr-defined]

    def action_retry(self) -> None:
        ids = self._need_ids()
        if ids:
            self.run_write("retry", ids)

    def action_priority(self, delta: int) -> None:
        ids = self._need_ids()
        if ids:
            self.run_write("priority", ids, delta)

    def action_duplicate(self) -> None:
        ids = self._need_ids()
        if ids:
            self.load_specs(ids[:1], "duplicate")

    @work(thread=True, group="write", exit_on_error=False)
    def run_write(self, op: str, ids: list[int], arg: int = 0) -> None:
        source = self.app.source  # type: ignore[attr-defined]
        try:
            if op == "cancel":
                done = source.cancel(ids)
                words = {"cancelled": "cancelled", "running": "stopping (the worker ends it)"}
                text = "; ".join(f"job {i} {words.get(st, 'already ' + st)}" for i, st in done)
                msg = ActionDone(text)
            elif op == "retry":
                mappings = source.retry(ids)
                text = "; ".join(f"job {old} retried as job {m[old]}" + (f" with {len(m) - 1} skipped dependent(s)" if len(m) > 1 else "")
                                 for old, m in zip(ids, mappings, strict=True))
                msg = ActionDone(text, select_id=mappings[-1][ids[-1]])
            elif op == "delete":
                done = source.delete(ids)
                msg = ActionDone(f"deleted {ids_label(done)}")
            elif op == "priority":
                pairs = source.change_priority(ids, arg)
                msg = ActionDone("; ".join(f"job {i} priority {p:+d}" for i, p in pairs))
            else:  # pragma: no cover
                raise ValueError(op)
        except ActionError as e:
            msg = ActionDone(str(e), severity="warning", changed=False)
        self.post_message(msg)  # type: ignore[attr-defined]

    @work(thread=True, exclusive=True, group="specs", exit_on_error=False)
    def load_specs(self, ids: list[int], purpose: str) -> None:
        specs = self.app.source.specs(ids)  # type: ignore[attr-defined]
        if not get_current_worker().is_cancelled:
            self.post_message(SpecsLoaded(specs, purpose))  # type: ignore[attr-defined]

    def on_specs_loaded(self, message: SpecsLoaded) -> None:
        message.stop()
        if not message.specs:
            self.notify("That job is gone", severity="warning")  # type: ignore[attr-defined]
            return
        if message.purpose == "duplicate":
            jid, _name, spec = message.specs[0]
            self.app.open_new_job(spec, f"Duplicate of job {jid}")  # type: ignore[attr-defined]
        elif message.purpose == "compare":
            from tui.screens.compare import CompareScreen

            self.app.push_screen(CompareScreen(message.specs))  # type: ignore[attr-defined]
