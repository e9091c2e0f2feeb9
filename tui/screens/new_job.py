"""New job: a menu of kinds and presets, then a form generated from the kind's spec class.

The form (`tui.widgets.spec_form`) shows the fields that fit the kind and method, the common ones
first and the rest folded under "Advanced", with the class's defaults filled in and its docstrings
as help for the focused field; ctrl+f finds a field by name. Every change is validated (in a thread
worker, through `client.Client.expand`, exactly as `labdeck submit` would) and the YAML preview and
the list of jobs it would queue follow along; an error shows at the field it names. ctrl+s queues;
ctrl+t saves the spec to the user's saved specs and ctrl+o to any file (`new_job_save`).
Duplicate-and-edit opens this screen filled from a past job's spec. The menu also lists the saved
specs, the shipped recipes with their variants and a spec file from disk; those open
`tui.screens.recipe` (a form over the file's `vars:`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import ContentSwitcher, Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker, WorkerState, get_current_worker

from engine.presets import PRESETS
from engine.specs import KINDS
from tui import spec_fields as SF
from tui.messages import ActionDone
from tui.render import st
from tui.saved_specs import tilde
from tui.screens.new_job_menu import RecipeMenu
from tui.screens.new_job_save import SaveActions
from tui.source import ActionError
from tui.waiting import spec_warning
from tui.widgets.choice import Choice
from tui.widgets.key_bar import KeyBar
from tui.widgets.spec_form import SpecForm
from tui.widgets.status_bar import StatusBar

FORM_ACTIONS = frozenset({"submit", "find_field", "save_spec", "save", "toggle_preview"})
NARROW = 120  # below this width the YAML preview is a toggle (ctrl+y) instead of a side pane


class Validated(Message):
    def __init__(self, result: SF.Validation, token: int) -> None:
        super().__init__()
        self.result = result
        self.token = token

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Validated)


class Submitted(Message):
    def __init__(self, ids: list[int]) -> None:
        super().__init__()
        self.ids = ids


class SuggestionsLoaded(Message):
    def __init__(self, suggestions: dict[str, list[str]]) -> None:
        super().__init__()
        self.suggestions = suggestions


class NewJobScreen(RecipeMenu, SaveActions, Screen[list[int] | None]):
    CSS_PATH = "new_job.tcss"

    BINDINGS = [
        Binding("escape", "back", "Back", id="new.back"),
        Binding("ctrl+s", "submit", "Queue", id="new.submit"),
        Binding("ctrl+f", "find_field", "Find a field", id="new.find"),
        Binding("ctrl+t", "save_spec", "Save to my specs", id="new.save_spec"),
        Binding("ctrl+o", "save", "Save as file", id="new.save"),
        Binding("ctrl+y", "toggle_preview", "YAML preview", id="new.preview"),
    ]

    def __init__(self, spec: dict[str, Any] | None = None, title: str = "New job") -> None:
        super().__init__()
        self.initial = spec
        self.title_text = title
        self.kind: str | None = None
        self.fields: list[SF.FieldSpec] = []
        self.result: SF.Validation | None = None
        self._token = 0
        self._timer = None
        self._suggestions: dict[str, list[str]] = {}
        self._tried = False  # after a first ctrl+s, empty required fields are marked too
        self._recipes: dict[str, tuple[str, str | None, str]] = {}  # menu option id -> (recipe, variant, text)
        self._saved: dict[str, Path] = {}  # the user's saved specs: name -> file

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(f"{self.title_text} · choose a kind or a preset", id="form-title", classes="screen-title")
        with ContentSwitcher(initial="kind-menu", id="new-switcher"):
            yield OptionList(*self._menu_options(), id="kind-menu")
            with Horizontal(id="form-body"):
                yield SpecForm(id="spec-form")
                with VerticalScroll(id="preview"):
                    yield Static(id="preview-text")
        yield Static("", id="form-status")
        yield Static("Choose a kind of job, or a preset to start from.", id="field-help")
        yield KeyBar()

    def _menu_options(self) -> list[Option | None]:
        opts: list[Option | None] = []
        for kind in KINDS:
            opts.append(Option(Text.assemble((f"{kind:<9}", "bold"), "  ", (SF.kind_summary(kind), "dim")), id=f"kind:{kind}"))
        if PRESETS:
            opts.append(None)
            for name, p in PRESETS.items():
                opts.append(Option(Text.assemble(("preset ", "dim"), (name, "bold"), "  ", (p.description, "dim")), id=f"preset:{name}"))
        opts.append(None)
        opts.append(Option(Text.assemble(("file   ", "dim"), ("a spec file or recipe from disk…", "bold")), id="file:"))
        return opts  # the shipped recipes follow once read (`_load_recipes`, off the event loop)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The form's keys (queue, find, save, preview) are offered only once a form is open."""
        return self.kind is not None or action not in FORM_ACTIONS

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.report_worker_error(event.worker)

    def on_mount(self) -> None:
        self.set_class(self.app.size.width < NARROW, "-narrow")
        self._load_suggestions()
        self._load_recipes()
        if self.initial is not None:
            self.call_after_refresh(self._open_form, self.initial.get("kind", "command"), self.initial)
        else:
            self.query_one("#kind-menu", OptionList).focus()

    def on_resize(self) -> None:
        self.set_class(self.app.size.width < NARROW, "-narrow")

    # ------------------------------------------------------------------ menu

    @on(OptionList.OptionSelected, "#kind-menu")
    async def _chosen(self, event: OptionList.OptionSelected) -> None:
        what, _, name = (event.option.id or "").partition(":")
        if what == "kind":
            await self._open_form(name, None)
        elif what == "preset":
            preset = PRESETS[name]
            await self._open_form(preset.kind, preset.spec())
        elif what == "recipe":
            from engine.recipes import recipe_path

            recipe, variant, _text = self._recipes[event.option.id or ""]
            path = recipe_path(recipe)
            if path is not None:
                await self._open_recipe(path, variant, f"{recipe} · {variant}" if variant else recipe)
        elif what == "file":
            self._ask_file()
        elif what == "saved":
            path = self._saved.get(name)
            if path is not None:
                await self._open_recipe(path, None, f"my spec {name}")

    @on(OptionList.OptionHighlighted, "#kind-menu")
    def _menu_help(self, event: OptionList.OptionHighlighted) -> None:
        what, _, name = (event.option.id or "").partition(":")
        text = SF.kind_summary(name) if what == "kind" else (PRESETS[name].description if name in PRESETS else "")
        if what == "recipe":
            recipe, variant, text = self._recipes.get(event.option.id or "", ("", None, ""))
            text = f"labdeck submit {recipe}{' --variant ' + variant if variant else ''}: {text}"
        elif what == "file":
            text = "A YAML or JSON spec: one job, a sweep or a pipeline (its vars: become a form)"
        elif what == "saved":
            text = f"labdeck submit {tilde(self._saved.get(name, Path(name)))}"
        self.query_one("#field-help", Static).update(Text(text))

    # ------------------------------------------------------------------ form

    def _defaults(self, kind: str) -> dict[str, Any]:
        exps = self._suggestions.get("experiment") or []
        return {"experiment": exps[0] if exps else "scratch", "name": kind}

    @property
    def form(self) -> SpecForm:
        return self.query_one("#spec-form", SpecForm)

    async def _open_form(self, kind: str, spec: dict[str, Any] | None) -> None:
        self.kind = kind
        self.refresh_bindings()
        self.fields = SF.fields_for(kind)
        values = SF.editor_values(kind, {**self._defaults(kind), **(spec or {})})
        await self.form.build(kind, values)
        self.query_one("#form-title", Static).update(Text.assemble((self.title_text, "bold"), "  ", (kind, "cyan")))
        self.query_one("#new-switcher", ContentSwitcher).current = "form-body"
        first = next((f for f in self.fields if f.required and not values.get(f.name)), self.fields[0])
        self.form.focus_field(first.name)
        self._apply_suggestions()
        self._schedule(0)

    def raw_values(self) -> dict[str, Any]:
        return self.form.raw_values()

    def set_value(self, name: str, value: Any) -> None:
        """Set one editor (tests and the palette use it); validation follows as for typing."""
        self.form.set_value(name, value)

    def _apply_suggestions(self) -> None:
        for name, key in (("model", "model"), ("sft", "model"), ("aligned", "model"), ("base", "model"),
                          ("dataset", "dataset"), ("experiment", "experiment")):
            items = self._suggestions.get(key)
            if items:
                for w in self.query(f"#f-{name}"):
                    if isinstance(w, Input):
                        w.suggester = SuggestFromList(items, case_sensitive=False)

    @work(thread=True, exclusive=True, group="suggestions", exit_on_error=False)
    def _load_suggestions(self) -> None:
        self.post_message(SuggestionsLoaded(self.app.source.suggestions()))

    def on_suggestions_loaded(self, message: SuggestionsLoaded) -> None:
        self._suggestions = message.suggestions
        self._apply_suggestions()

    # ------------------------------------------------------------------ validation

    @on(Input.Changed)
    @on(Choice.Changed)
    def _edited(self, event: Message) -> None:
        wid = getattr(getattr(event, "control", None), "id", None) or ""
        if self.kind is not None and wid.startswith("f-"):
            f = self.form.field(wid)
            if f is not None and self.form.is_selector(f.name):
                self.form.show_applicable()  # the method changed: its fields, with what was typed in them
            self._schedule(0.25)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.stop()
        if delay <= 0:
            self._start_validation()
        else:
            self._timer = self.set_timer(delay, self._start_validation)

    def _start_validation(self) -> None:
        if self.kind is None:
            return
        self._token += 1
        self._validate(self.kind, self.raw_values(), self._token)

    @work(thread=True, exclusive=True, group="validate", exit_on_error=False)
    def _validate(self, kind: str, raw: dict[str, Any], token: int) -> None:
        result = SF.validate(kind, raw)
        if not get_current_worker().is_cancelled:
            self.post_message(Validated(result, token))

    def on_validated(self, message: Validated) -> None:
        if message.token != self._token:
            return  # the form changed since
        self.result = message.result
        self._show_result(message.result)

    def _show_result(self, r: SF.Validation) -> None:
        names = {f.name for f in self.fields}
        self.form.mark({f.name: self._field_error(f.name) for f in self.fields})
        self._show_help()
        status = self.query_one("#form-status", Static)
        status.remove_class("-ok", "-error", "-warn")
        warning = spec_warning(r.data, getattr(self.app, "overview", None)) if r.ok else None
        if warning:
            status.update(Text(f"⚠ {warning} · ctrl+s queues it anyway"))
            status.add_class("-warn")
        elif r.ok:
            n = len(r.names)
            status.update(Text(f"✔ valid · ctrl+s queues {n} job{'s' if n != 1 else ''}"))
            status.add_class("-ok")
        elif not self._tried and all(m.endswith("required field is missing") for m in r.errors.values()):
            status.update(Text(f"… to fill in: {', '.join(r.errors)} (required)"))
        else:
            field, msg = next(iter(r.errors.items()))
            shown = msg if field in names else f"{field}: {msg}" if field else msg
            status.update(Text(f"✘ {shown}"))
            status.add_class("-error")
        preview = Text(r.yaml_text.rstrip())
        if r.names:
            preview.append(f"\n\n# queues {len(r.names)} job{'s' if len(r.names) != 1 else ''}:\n", style="dim")
            for name in r.names[:30]:
                preview.append(f"#   {name}\n", style="dim")
            if len(r.names) > 30:
                preview.append(f"#   … {len(r.names) - 30} more\n", style="dim")
        self.query_one("#preview-text", Static).update(preview)

    def _field_error(self, name: str) -> str | None:
        msg = self.result.errors.get(name) if self.result is not None else None
        if msg and not self._tried and msg.endswith("required field is missing"):
            return None  # not yet: the status line says it; no field is red before a first try
        return msg

    def on_descendant_focus(self, event) -> None:  # noqa: ANN001
        self._show_help()

    def _show_help(self) -> None:
        """Help for the focused field: its error if it has one, its default and its description."""
        wid = getattr(self.focused, "id", None) or ""
        if not wid.startswith("f-"):
            return
        f = self.form.field(wid)
        if f is None:
            return
        err = self._field_error(f.name)
        if err:
            help_text = Text(f"✘ {err}", style=st("bold red"))
        else:
            help_text = Text.assemble((f.name, "bold"), (f"  default: {f.default_text() or '(none)'}", "dim"))
            if f.description:
                help_text.append("  " + f.description)
        self.query_one("#field-help", Static).update(help_text)

    # ------------------------------------------------------------------ actions

    def action_back(self) -> None:
        switcher = self.query_one("#new-switcher", ContentSwitcher)
        if switcher.current == "form-body" and self.initial is None:
            switcher.current = "kind-menu"
            self.kind = None
            self.refresh_bindings()
            self.query_one("#form-title", Static).update(f"{self.title_text} · choose a kind or a preset")
            self.query_one("#form-status", Static).update("")
            self.query_one("#kind-menu", OptionList).focus()
        else:
            self.dismiss(None)

    def action_toggle_preview(self) -> None:
        self.toggle_class("-preview")

    def action_find_field(self) -> None:
        """A fuzzy finder (Textual's command palette) over the fields shown; choosing one focuses it."""
        from functools import partial

        if self.kind is None:
            self.notify("Choose a kind first", severity="warning")
            return
        titles = dict(SF.SECTIONS)
        common, rest = SF.form_order(self.kind, self.fields)
        # the focus waits for a refresh: the palette's screen is still closing when the callback runs
        commands = [(f.name, partial(self.call_after_refresh, self.form.focus_field, f.name),
                     f.description if f.common else f"Advanced · {titles[f.section]} · {f.description}")
                    for f in common + rest if f.name in self.form.shown]
        self.app.search_commands(commands, placeholder="Go to field…")

    def action_submit(self) -> None:
        if self.kind is None:
            self.notify("Choose a kind first", severity="warning")
            return
        self._tried = True
        self._submit(self.kind, self.raw_values())

    @work(thread=True, exclusive=True, group="submit", exit_on_error=False)
    def _submit(self, kind: str, raw: dict[str, Any]) -> None:
        result = SF.validate(kind, raw)
        if not result.ok:
            self.post_message(Validated(result, self._token))  # the token of the form as it is
            field, msg = next(iter(result.errors.items()))
            self.post_message(ActionDone(f"Not queued: {msg}", "warning", changed=False))
            return
        try:
            ids = self.app.source.submit(result.data)
        except ActionError as e:
            self.post_message(ActionDone(f"Not queued: {e}", "warning", changed=False))
            return
        self.post_message(Submitted(ids))

    def on_submitted(self, message: Submitted) -> None:
        ids = message.ids
        span = f"job {ids[0]}" if len(ids) == 1 else f"{len(ids)} jobs ({ids[0]}–{ids[-1]})"
        self.app.post_message(ActionDone(f"Queued {span}", select_id=ids[0]))
        self.dismiss(ids)
