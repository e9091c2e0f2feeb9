"""The `/` filter line of the jobs and experiments screens: hidden until asked for, debounced.

Both screens filter the same way (`text status:x kind:y exp:NAME`, parsed by `JobQuery.parse`), so
the line that takes the words lives here once: typing applies the filter 0.15 s after the last key
(a long list is not re-read on every key), enter applies it at once and hands the keys back to the
table, and an empty filter hides the line again. The screen owns the query: it hears `Applied`
with the text and parses it with its own sort.
"""

from __future__ import annotations

from textual import on
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input

DEBOUNCE_S = 0.15


class FilterLine(Input):
    """An Input docked above the key bar that posts `Applied(text)` when the filter should change."""

    DEFAULT_CSS = """
    FilterLine {
        dock: bottom;
        margin-bottom: 1;
        height: 1;
        border: none;
    }
    """

    class Applied(Message):
        """Filter by `text` now; `submitted`: the person pressed enter (give the keys back)."""

        def __init__(self, line: FilterLine, text: str, submitted: bool = False) -> None:
            super().__init__()
            self.line = line
            self.text = text
            self.submitted = submitted

        @property
        def control(self) -> FilterLine:
            return self.line

    def __init__(self, placeholder: str, *, id: str) -> None:  # noqa: A002 - Textual's name for it
        super().__init__(placeholder=placeholder, id=id, compact=True, classes="hidden")
        self._debounce: Timer | None = None

    def open(self) -> None:
        """Show the line and take the keys (`/`)."""
        self.remove_class("hidden")
        self.focus()

    def close(self) -> None:
        """Empty and hide the line without applying anything (the screen resets its own query)."""
        self._stop()
        self.value = ""
        self.add_class("hidden")

    def show_text(self, text: str) -> None:
        """Show `text` as the filter (set from elsewhere: the palette), hidden when empty; applies nothing."""
        self._stop()
        with self.prevent(Input.Changed):
            self.value = text
        self.set_class(not text, "hidden")

    @property
    def is_open(self) -> bool:
        return bool(self.value) or not self.has_class("hidden")

    def _stop(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
            self._debounce = None

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        self._stop()
        value = event.value
        self._debounce = self.set_timer(DEBOUNCE_S, lambda: self.post_message(self.Applied(self, value)))

    @on(Input.Submitted)
    def _entered(self, event: Input.Submitted) -> None:
        event.stop()
        self._stop()
        if not event.value:
            self.add_class("hidden")
        self.post_message(self.Applied(self, event.value, submitted=True))
