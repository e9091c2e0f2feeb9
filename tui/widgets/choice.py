"""A one-line choice among a few values: `‹ cosine ›`, changed with ←/→ (or space, h/l).

The New-job form has dozens of enumerated and yes/no fields; a `Select` is five widgets with an
overlay each, this is one, so a 40-field form mounts in a fraction of the time and every choice
is one key away.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class Choice(Widget, can_focus=True):
    DEFAULT_CSS = """
    Choice { height: 1; width: 1fr; }
    Choice:focus { background: $accent 30%; }
    """

    BINDINGS = [
        Binding("right,l,space", "step(1)", "Next choice", show=False, id="choice.next"),
        Binding("left,h", "step(-1)", "Previous choice", show=False, id="choice.previous"),
    ]

    value: reactive[Any] = reactive(None)

    class Changed(Message):
        def __init__(self, choice: Choice, value: Any) -> None:
            super().__init__()
            self.choice = choice
            self.value = value

        @property
        def control(self) -> Choice:
            return self.choice

    def __init__(self, options: list[tuple[str, Any]], value: Any, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.options = options
        self.set_reactive(Choice.value, value)

    def render(self) -> Text:
        label = next((lbl for lbl, v in self.options if v == self.value), str(self.value))
        i = self._index()
        out = Text("‹ " if i > 0 else "  ", style="dim")
        out.append(label, style="bold" if self.has_focus else "")
        out.append(" ›" if i < len(self.options) - 1 else "  ", style="dim")
        out.append(f"   {i + 1}/{len(self.options)}", style="dim")
        return out

    def _index(self) -> int:
        return next((i for i, (_, v) in enumerate(self.options) if v == self.value), 0)

    def action_step(self, delta: int) -> None:
        i = (self._index() + delta) % len(self.options)
        self.value = self.options[i][1]

    def watch_value(self, value: Any) -> None:
        self.post_message(self.Changed(self, value))

    def _on_focus(self, event: events.Focus) -> None:
        self.refresh()

    def _on_blur(self, event: events.Blur) -> None:
        self.refresh()
