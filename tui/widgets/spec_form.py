"""The New-job form's fields: common ones on top, the rest folded under "Advanced".

The form owns one editor per field of the kind's spec class (`tui.spec_fields`): an `Input` or a
`Choice`, beside a label, in a two-column grid (few widgets, so a 50-field form mounts fast). The
layout comes from the spec classes (`engine.specs.form`): the common fields first (name,
experiment, method, model, data, learning rate, epochs or steps, GPUs), the others in their
sections inside a `Collapsible`, closed unless one of them holds a non-default value or an error.
A field that the chosen method does not use (DPO's beta for SFT) is hidden, not removed: what was
typed there comes back when the method does.
"""

from __future__ import annotations

from typing import Any

from textual.containers import Grid, VerticalScroll
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Collapsible, Input, Label, Static

from tui import spec_fields as SF
from tui.widgets.choice import Choice

BOOL_CHOICES = [("true", True), ("false", False)]
OFF_ON = [("off", False), ("on", True)]  # an expanded block's switch (LoRA): its fields show while on


REVEAL_TICK_S = 0.05
REVEAL_STEADY_TICKS = 4  # in view this many ticks in a row: the fold has settled
REVEAL_MAX_TICKS = 60  # give up after 3 s (a view too small to hold the editor)


class SpecForm(VerticalScroll):
    """Build with `await form.build(kind, values)`; read with `raw_values()`."""

    DEFAULT_CSS = """
    SpecForm .section { margin-top: 1; text-style: bold; color: $accent; height: 1; }
    SpecForm .fields { grid-size: 2; grid-columns: 24 1fr; grid-rows: 1; height: auto; }
    SpecForm .field-label { height: 1; color: $text-muted; }
    SpecForm .field-label.-invalid { color: $error; text-style: bold; }
    SpecForm #advanced { margin-top: 1; border: none; padding: 0; background: transparent; }
    SpecForm #advanced > Contents { padding: 0 0 0 1; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind: str | None = None
        self.fields: list[SF.FieldSpec] = []
        self.advanced: set[str] = set()
        self.shown: set[str] = set()
        self._revealing: Timer | None = None  # focus_field's re-check, while the fold settles

    async def build(self, kind: str, values: dict[str, Any]) -> None:
        self.kind = kind
        self.fields = SF.fields_for(kind)
        common, rest = SF.form_order(kind, self.fields)
        self.advanced = {f.name for f in rest}
        await self.remove_children()
        sections: list[Widget] = []
        for section, title in SF.SECTIONS:
            members = [f for f in rest if f.section == section]
            if members:
                sections += [Static(title, classes="section", id=f"section-{section}"),
                             self._grid(members, values, f"grid-{section}")]
        raw = {f.name: values.get(f.name) for f in self.fields}
        shown = SF.applicable(self.fields, raw)
        folded = not any(f.name in shown and not SF.is_default(f, raw[f.name]) for f in rest)
        await self.mount_all([self._grid(common, values, "grid-common"),
                              Collapsible(*sections, title="Advanced", collapsed=folded, id="advanced")])
        self.show_applicable()

    def _title(self) -> str:
        n = len(self.advanced & self.shown)
        return f"Advanced · {n} more field{'s' if n != 1 else ''} (ctrl+f finds one by name)"

    def _grid(self, members: list[SF.FieldSpec], values: dict[str, Any], wid: str) -> Grid:
        cells: list[Widget] = []
        for f in members:
            label = f"  {f.name.split('.', 1)[1]}" if f.group and f.group != f.name else f.name
            cells += [Label(label, classes="field-label", id=f"row-{f.wid[2:]}"), self._editor(f, values.get(f.name))]
        return Grid(*cells, classes="fields", id=wid)

    @staticmethod
    def _editor(f: SF.FieldSpec, value: Any) -> Widget:
        wid = f.wid
        if f.editor == "select":
            options = ([("(none)", "")] if f.optional else []) + [(c, c) for c in f.choices]
            current = value if value in f.choices else options[0][1]
            return Choice(options, current, id=wid)
        if f.editor == "bool":
            return Choice(OFF_ON if f.parse == "present" else BOOL_CHOICES, bool(value), id=wid)
        placeholder = "required" if f.required else ("" if value else f"(none) {f.description[:60]}")
        return Input(str(value or ""), id=wid, compact=True, placeholder=placeholder, select_on_focus=False)

    # ------------------------------------------------------------------ values

    def raw_values(self) -> dict[str, Any]:
        """Every editor's content, hidden ones included (`spec_fields.collect` leaves those out)."""
        out: dict[str, Any] = {}
        for f in self.fields:
            w = self.query_one(f"#{f.wid}")
            if isinstance(w, (Choice, Input)):
                out[f.name] = w.value
        return out

    def field(self, name: str) -> SF.FieldSpec | None:
        """The field named `name` (`lora.r`), or whose editor has the widget id `name` (`f-lora-r`)."""
        return next((f for f in self.fields if name in (f.name, f.wid)), None)

    def editor(self, name: str) -> Widget:
        f = self.field(name)
        return self.query_one(f"#{f.wid if f else 'f-' + name}")

    def set_value(self, name: str, value: Any) -> None:
        w = self.editor(name)
        if isinstance(w, Choice):
            w.value = value
        elif isinstance(w, Input):
            w.value = str(value)

    def is_selector(self, name: str) -> bool:
        """Whether other fields' presence depends on this one (a fine-tune's method, `lora`)."""
        return any(other == name for f in self.fields for other, _ in f.when)

    def show_applicable(self) -> set[str]:
        """Hide the fields the current values make irrelevant, show the others; the shown names. A
        field that comes back with a value of its own (typed before the method changed) opens the fold."""
        before, raw = self.shown, self.raw_values()
        self.shown = SF.applicable(self.fields, raw)
        back = (self.shown - before) & self.advanced
        if before and any(not SF.is_default(f, raw[f.name]) for f in self.fields if f.name in back):
            self.unfold()
        for f in self.fields:
            on = f.name in self.shown
            self.query_one(f"#row-{f.wid[2:]}").display = on
            self.query_one(f"#{f.wid}").display = on
        for section, _ in SF.SECTIONS:
            for title in self.query(f"#section-{section}"):
                title.display = any(f.name in self.shown for f in self.fields
                                    if f.section == section and f.name in self.advanced)
        self.query_one("#advanced", Collapsible).title = self._title()
        return self.shown

    # ------------------------------------------------------------------ errors and focus

    def mark(self, errors: dict[str, str | None]) -> None:
        """Mark the fields with an error; an error inside the fold opens it."""
        for f in self.fields:
            self.query_one(f"#row-{f.wid[2:]}").set_class(errors.get(f.name) is not None, "-invalid")
        if any(errors.get(n) is not None for n in self.advanced & self.shown):
            self.unfold()

    def unfold(self) -> None:
        self.query_one("#advanced", Collapsible).collapsed = False

    @property
    def folded(self) -> bool:
        return self.query_one("#advanced", Collapsible).collapsed

    def focus_field(self, name: str) -> None:
        """Unfold the field's section if needed, focus its editor and keep scrolling it into view
        until it has stayed there a moment.

        Opening the fold moves the view several frames later, outside our control: the section's
        layout arrives a refresh after the fold opens, and Textual's Collapsible then scrolls itself
        into view (animated). One scroll to the editor made too early is undone by those, so a
        short timer re-checks and scrolls again until the editor has been in view for a few ticks."""
        editor = self.editor(name)
        if name in self.advanced and self.folded:
            self.unfold()
        editor.focus(scroll_visible=False)
        self._stop_revealing()  # a field chosen before this one no longer matters
        steady, focused = [0], [False]

        def keep_in_view() -> None:
            if self._revealing is not timer:
                return  # stopped, or replaced by a later focus_field
            if self.app.focused is editor:
                focused[0] = True
            elif focused[0]:  # the person moved on: leave the view to them
                self._stop_revealing()
                return
            if editor.size and self.can_view_entire(editor):
                steady[0] += 1
                if steady[0] >= REVEAL_STEADY_TICKS:
                    self._stop_revealing()
                return
            steady[0] = 0
            if editor.size:
                editor.scroll_visible(animate=False, immediate=True)

        timer = self._revealing = self.set_interval(REVEAL_TICK_S, keep_in_view, repeat=REVEAL_MAX_TICKS)
        self.call_after_refresh(keep_in_view)

    def _stop_revealing(self) -> None:
        if self._revealing is not None:
            self._revealing.stop()
            self._revealing = None
