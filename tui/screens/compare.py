"""Two or more jobs' specs side by side, showing only the fields that differ."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

from tui.widgets.key_bar import KeyBar
from tui.widgets.spec_diff import SpecDiff
from tui.widgets.status_bar import StatusBar


class CompareScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back", id="compare.back")]

    def __init__(self, specs: list[tuple[int, str, dict[str, Any]]]) -> None:
        super().__init__()
        self.specs = specs

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(id="compare-title", classes="screen-title")
        yield SpecDiff(id="compare-diff")
        yield KeyBar()

    def on_mount(self) -> None:
        diff = self.query_one(SpecDiff)
        diff.show(self.specs)
        ids = ", ".join(f"#{i}" for i, _, _ in self.specs)
        n = diff.row_count
        self.query_one("#compare-title", Static).update(
            f"[b]Compare[/b] {ids} · {n} field{'s' if n != 1 else ''} differ · {diff.same} identical hidden"
        )
        diff.focus()
