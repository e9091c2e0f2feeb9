"""Queue a recipe (or any spec file) from the menu: a form over its `vars:`, a preview, ctrl+s.

Each variable gets an editor with the file's own comment as help and a check of its value
(local path, hub id, missing file: `tui.recipes.check_value`). The preview follows every change
(in a thread worker, `tui.recipes.preview`: the same expansion `labdeck submit` runs): stages,
job count, GPUs each stage's jobs ask for, what will download. ctrl+s queues it through
`Source.submit_file` and returns to the jobs with the first new job selected.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widgets import Input, Label, Static
from textual.worker import get_current_worker

from tui.messages import ActionDone
from tui.recipes import Preview, VarField, check_value
from tui.render import st
from tui.source import ActionError
from tui.widgets.key_bar import KeyBar
from tui.widgets.status_bar import StatusBar


class VarsLoaded(Message):
    def __init__(self, fields: list[VarField] | None, error: str = "") -> None:
        super().__init__()
        self.fields = fields
        self.error = error


class PreviewLoaded(Message):
    def __init__(self, preview: Preview, token: int) -> None:
        super().__init__()
        self.preview = preview
        self.token = token

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PreviewLoaded)


class RecipeQueued(Message):
    def __init__(self, ids: list[int]) -> None:
        super().__init__()
        self.ids = ids


def complete_path(value: str) -> str | None:
    """The first entry of the folder `value` names that starts with its last part (folders end in /)."""
    import os

    if not value:
        return None
    folder, _, prefix = value.rpartition("/")
    base = Path(os.path.expanduser(folder or ".")) if folder or not value.startswith("/") else Path("/")
    try:
        names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(base) if e.name.startswith(prefix)
                       and not e.name.startswith(".") or (prefix.startswith(".") and e.name.startswith(prefix)))
    except OSError:
        return None
    spec = [n for n in names if n.endswith(("/", ".yaml", ".yml", ".json"))]
    pool = spec or names
    pick = pool[0] if pool else None
    return None if pick is None else (f"{folder}/" if folder or value.startswith("/") else "") + pick


class PathSuggester(Suggester):
    """Completes file paths as they are typed; the folder is listed in a thread, never on the loop."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        import asyncio

        return await asyncio.to_thread(complete_path, value)


def preview_renderable(p: Preview) -> Group:
    if p.error:
        return Group(Text(f"✘ {p.error}", style=st("bold red")))
    table = Table(box=None, padding=(0, 2), show_edge=False, header_style="bold")
    table.add_column("stage")
    table.add_column("jobs", justify="right")
    table.add_column("GPUs each", justify="right")
    for stage, n, g in p.stages:
        table.add_row(stage, str(n), str(g) if g else "CPU")
    head = Text.assemble(("queues ", "dim"), (f"{p.jobs} job{'s' if p.jobs != 1 else ''}", "bold"),
                         (" in experiment ", "dim"), (p.experiment, "bold"))
    down = Text("downloads: " + (", ".join(p.downloads) if p.downloads else "nothing (every model and dataset is local)"),
                style="dim")
    return Group(head, table, down)


class RecipeScreen(Screen[list[int] | None]):
    DEFAULT_CSS = """
    #recipe-form { height: auto; max-height: 60%; padding: 0 1; }
    #recipe-form Label { color: $text-muted; margin-top: 1; }
    #recipe-form Input { height: 1; border: none; }
    .var-help { color: $text-muted; height: auto; }
    .var-help.-bad { color: $error; text-style: bold; }
    #recipe-preview { height: 1fr; padding: 0 1; border-top: solid $panel; }
    """

    BINDINGS = [
        Binding("escape", "back", "Back", id="recipe.back"),
        Binding("ctrl+s", "submit", "Queue", id="recipe.submit"),
    ]

    def __init__(self, path: Path, variant: str | None, title: str) -> None:
        super().__init__()
        self.path = path
        self.variant = variant
        self.title_text = title
        self.fields: list[VarField] = []
        self.preview: Preview | None = None
        self._token = 0
        self._timer = None

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(Text.assemble(("Queue ", "bold"), (self.title_text, "bold cyan")), id="recipe-title", classes="screen-title")
        yield VerticalScroll(id="recipe-form")
        with VerticalScroll(id="recipe-preview"):
            yield Static("reading the file …", id="recipe-preview-text")
        yield KeyBar()

    def on_mount(self) -> None:
        self._read_vars()

    @work(thread=True, group="recipe", exit_on_error=False)
    def _read_vars(self) -> None:
        from engine.specfile import SpecError
        from tui.recipes import recipe_vars

        try:
            self.post_message(VarsLoaded(recipe_vars(self.path, self.variant)))
        except (OSError, SpecError) as e:
            self.post_message(VarsLoaded(None, str(e)))

    async def on_vars_loaded(self, message: VarsLoaded) -> None:
        if message.fields is None:
            self.query_one("#recipe-preview-text", Static).update(Text(f"✘ {message.error}", style=st("bold red")))
            return
        self.fields = message.fields
        form = self.query_one("#recipe-form", VerticalScroll)
        widgets = []
        for f in self.fields:
            widgets += [Label(f.name, id=f"label-{f.name}"), Input(f.value, id=f"var-{f.name}", compact=True),
                        Static(f.help, id=f"help-{f.name}", classes="var-help")]
        if not widgets:
            widgets.append(Static("This file declares no variables.", classes="var-help"))
        await form.mount_all(widgets)
        for f in self.fields:
            self._check(f.name, f.value)
        if self.fields:
            # the first field is at the top already; scrolling it "into view" before the form's
            # layout settled would hide its label (and made the first frame differ run to run)
            self.query_one(f"#var-{self.fields[0].name}", Input).focus(scroll_visible=False)
        self._refresh_preview()

    def values(self) -> dict[str, str]:
        """The variables that differ from the file's: what `--var NAME=VALUE` would pass."""
        out = {}
        for f in self.fields:
            value = self.query_one(f"#var-{f.name}", Input).value
            if value != f.value:
                out[f.name] = value
        return out

    def _check(self, name: str, value: str) -> bool:
        ok, note = check_value(value)
        field = next(f for f in self.fields if f.name == name)
        help_ = self.query_one(f"#help-{name}", Static)
        text = Text(field.help)
        if note:
            text.append(("  " if field.help else "") + ("✔ " if ok else "✘ ") + note)
        help_.update(text)
        help_.set_class(not ok, "-bad")
        return ok

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("var-"):
            self._check(event.input.id[4:], event.value)
            if self._timer is not None:
                self._timer.stop()
            self._timer = self.set_timer(0.3, self._refresh_preview)

    def _refresh_preview(self) -> None:
        self._token += 1
        self._preview(self.values(), self._token)

    @work(thread=True, exclusive=True, group="recipe-preview", exit_on_error=False)
    def _preview(self, values: dict[str, str], token: int) -> None:
        from tui.recipes import preview

        p = preview(self.path, values, self.variant)
        if not get_current_worker().is_cancelled:
            self.post_message(PreviewLoaded(p, token))

    def on_preview_loaded(self, message: PreviewLoaded) -> None:
        if message.token != self._token:
            return
        self.preview = message.preview
        self.query_one("#recipe-preview-text", Static).update(preview_renderable(message.preview))

    def action_back(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        bad = [f.name for f in self.fields if not check_value(self.query_one(f"#var-{f.name}", Input).value)[0]]
        if bad:
            self.notify(f"{bad[0]}: {check_value(self.query_one(f'#var-{bad[0]}', Input).value)[1]}", severity="warning")
            return
        if self.preview is not None and self.preview.error:
            self.notify(self.preview.error, severity="warning")
            return
        self._submit(self.values())

    @work(thread=True, group="write", exit_on_error=False)
    def _submit(self, values: dict[str, str]) -> None:
        try:
            ids = self.app.source.submit_file(self.path, values, self.variant)
        except ActionError as e:
            self.post_message(ActionDone(f"Not queued: {e}", "warning", changed=False))
            return
        self.post_message(RecipeQueued(ids))

    def on_recipe_queued(self, message: RecipeQueued) -> None:
        ids = message.ids
        self.app.post_message(ActionDone(f"Queued {len(ids)} job{'s' if len(ids) != 1 else ''} "
                                         f"({ids[0]}–{ids[-1]}) from {self.title_text}", select_id=ids[0]))
        self.dismiss(ids)
