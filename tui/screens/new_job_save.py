"""The New-job form's saves: to the user's saved specs (`n` lists them) or to any YAML file.

A mixin of `NewJobScreen`. Both write what the form would queue (only the fields that differ from
their defaults, the YAML preview's text), in a thread worker: ctrl+t asks for a name and writes
`HOME/specs/NAME.yaml` (`tui.saved_specs`: 0600, a name that cannot leave the folder) and asks
before replacing a saved spec of that name; ctrl+o asks for a path (relative to the working
directory). A refused name or path is a one-line warning.
"""

from __future__ import annotations

from typing import Any

from textual import work

from tui import spec_fields as SF
from tui.messages import ActionDone
from tui.source import ActionError


class SaveActions:
    """Mixed into NewJobScreen (which has `kind`, `raw_values()`, `app` and `_load_recipes`)."""

    kind: str | None
    app: Any

    def _spec_to_save(self) -> tuple[str, str] | None:
        """(a file stem from the job's name, the YAML text), or None before a kind is chosen."""
        if self.kind is None:
            self.notify("Choose a kind first", severity="warning")
            return None
        data, _errors = SF.collect(self.kind, self.raw_values())
        stem = str(data.get("name") or self.kind)
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-.") or self.kind
        return stem, SF.to_yaml(data)

    def action_save_spec(self) -> None:
        from tui.screens.dialogs import PromptScreen

        spec = self._spec_to_save()
        if spec is None:
            return
        stem, text = spec

        def chosen(name: str | None) -> None:
            if name:
                self._save_spec(name, text)

        self.app.push_screen(PromptScreen("Save to my specs (a name; the n menu lists them)", stem), chosen)

    @work(thread=True, group="write", exit_on_error=False)
    def _save_spec(self, name: str, text: str, replace: bool = False) -> None:
        from tui.saved_specs import SpecNameError, exists, save_spec

        try:
            if not replace and exists(self.app.source.home, name):
                self.app.call_from_thread(self._ask_to_replace, name, text)
                return
            written = save_spec(self.app.source.home, name, text)
        except SpecNameError as e:
            self.post_message(ActionDone(f"Not saved: {e}", "warning", changed=False))
            return
        except OSError as e:
            self.post_message(ActionDone(f"Not saved: {e.filename or name}: {e.strerror or e}", "warning",
                                         changed=False))
            return
        self.post_message(ActionDone(f"Saved {written}{' (it replaced the one saved before)' if replace else ''}",
                                     changed=False))
        self._load_recipes()  # the menu lists it when the person goes back

    def _ask_to_replace(self, name: str, text: str) -> None:
        """A saved spec of that name exists: replace it only on a yes (a no keeps it and saves nothing)."""
        from tui.screens.dialogs import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self._save_spec(name, text, replace=True)
            else:
                self.notify(f"Not saved: my specs already has {name!r}", severity="warning")

        self.app.push_screen(ConfirmScreen(f"Replace the saved spec {name!r}?",
                                           "n keeps the one saved before; ctrl+t again saves under another name"),
                             answered)

    def action_save(self) -> None:
        from tui.screens.dialogs import PromptScreen

        spec = self._spec_to_save()
        if spec is None:
            return
        stem, text = spec

        def chosen(path: str | None) -> None:
            if path:
                self._save(path, text)

        self.app.push_screen(PromptScreen("Save the spec as (YAML, for `labdeck submit`)", f"{stem}.yaml"), chosen)

    @work(thread=True, group="write", exit_on_error=False)
    def _save(self, path: str, text: str) -> None:
        try:
            written = self.app.source.write_text(path, text)
        except ActionError as e:
            self.post_message(ActionDone(f"Not saved: {e}", "warning", changed=False))
            return
        self.post_message(ActionDone(f"Saved {written}", changed=False))
