"""`?`: every key of the app, screen by screen, with what it does and its binding id.

Built from the `BINDINGS` of the app, its screens and widgets, so it cannot drift from them.
Binding ids are what a keymap names to change a key (`App.set_keymap`).
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


def binding_groups(app_class: type) -> list[tuple[str, list[Binding]]]:
    """(title, bindings) for every part of the app that has keys; `app_class` is the app's own
    class, passed in so this module does not import the app that opens it."""
    from tui.screens.compare import CompareScreen
    from tui.screens.dialogs import ConfirmScreen, ExportScreen, PromptScreen
    from tui.screens.gpus import GpusScreen
    from tui.screens.job_detail import JobDetailScreen
    from tui.screens.jobs import JobsScreen
    from tui.screens.new_job import NewJobScreen
    from tui.screens.results import ResultsScreen
    from tui.widgets.jobs_table import JobsTable

    def b(cls: type) -> list[Binding]:
        return [x for x in cls.BINDINGS if isinstance(x, Binding)]

    return [
        ("Everywhere", b(app_class) + [Binding("ctrl+p", "command_palette", "Command palette: every action by name", id="app.palette")]),
        ("Jobs", b(JobsScreen) + b(JobsTable) + [Binding("up,down", "", "Move (crosses pages)", id="jobs.cursor")]),
        ("Job detail", b(JobDetailScreen)),
        ("New job", b(NewJobScreen) + [Binding("tab,shift+tab", "", "Next / previous field", id="new.fields")]),
        ("Results", b(ResultsScreen) + [Binding("tab,shift+tab", "", "Next / previous control", id="results.fields")]),
        ("GPUs", b(GpusScreen)),
        ("Compare specs", b(CompareScreen)),
        ("Dialogs", b(ConfirmScreen) + b(PromptScreen) + b(ExportScreen)),
    ]


def _keys(key: str) -> str:
    names = {"question_mark": "?", "slash": "/", "plus": "+", "minus": "-", "space": "space", "escape": "esc",
             "left_square_bracket": "[", "right_square_bracket": "]", "enter": "enter"}
    out = []
    for k in key.split(","):
        k = k.strip()
        out.append(names.get(k, k.replace("ctrl+", "^")))
    return " ".join(out)


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #help-body {
        width: 100; max-width: 100%; height: 100%; border: round $accent; background: $surface;
        padding: 0 1; scrollbar-size-vertical: 1;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close", id="help.close")]

    def __init__(self, under: Screen | None = None) -> None:
        super().__init__()
        self.under = type(under).__name__ if under is not None else ""

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static(self._help_table())

    def _help_table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True, min_width=12)
        table.add_column()
        table.add_column(style="dim", no_wrap=True)
        table.add_row(Text("labdeck keys", style="bold"), Text("Keyboard only; q leaves the app and the jobs keep running."), "")
        for title, bindings in binding_groups(type(self.app)):
            table.add_row("", "", "")
            table.add_row(Text(title, style="bold underline"), "", "")
            for bnd in bindings:
                table.add_row(_keys(bnd.key), Text(bnd.description), Text(bnd.id or ""))
        table.add_row("", "", "")
        table.add_row(Text("filter", style="bold"), Text("/ then text; status:failed  kind:finetune  exp:NAME narrow it"), "")
        return table

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()
