"""Small modal dialogs: a yes/no confirmation, a one-line prompt, a choice among a few, the results export."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option


class Dialog(ModalScreen):
    """What every dialog shares: a bordered box in the middle of the screen."""

    SCOPED_CSS = False  # the rules name the dialog classes themselves
    DEFAULT_CSS = """
    Dialog {
        align: center middle;
    }

    .dialog {
        width: 64;
        max-width: 95%;
        height: auto;
        padding: 1 2;
        border: round $accent;
        background: $surface;
    }

    .dialog-title {
        text-style: bold;
        margin-bottom: 1;
    }

    .dialog-detail {
        color: $text-muted;
        margin-bottom: 1;
    }

    .dialog-keys {
        margin-top: 1;
        color: $text-muted;
    }

    #export-format, #choice-list {
        height: auto;
        max-height: 16;
        margin-bottom: 1;
    }
    """


class ConfirmScreen(Dialog, ModalScreen[bool]):
    """Ask before doing something that cannot be undone; `y`/enter confirms, `n`/escape declines."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-title")
            if self.detail:
                yield Static(self.detail, classes="dialog-detail")
            yield Static("[b]y[/b] yes    [b]n[/b] no", classes="dialog-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PromptScreen(Dialog, ModalScreen[str | None]):
    """One line of text (a file name); enter accepts, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title: str, value: str = "", detail: str = "", suggester=None) -> None:  # noqa: ANN001
        super().__init__()
        self.title_text = title
        self.value = value
        self.detail = detail
        self.suggester = suggester  # a textual.suggester.Suggester: completion as you type (right arrow takes it)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(self.value, id="prompt-input", compact=True, select_on_focus=False, suggester=self.suggester)
            yield Static(self.detail or "[b]enter[/b] save    [b]escape[/b] cancel", classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


EXPORT_FORMATS = (("csv", "CSV", "csv"), ("markdown", "Markdown", "md"), ("latex", "LaTeX", "tex"), ("json", "JSON", "json"))


class ExportScreen(Dialog, ModalScreen[tuple[str, str] | None]):
    """Choose a format (the list) and a file (the line below); enter writes, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="export.cancel")]

    def __init__(self, stem: str) -> None:
        super().__init__()
        self.stem = stem
        self.fmt = "csv"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Export the current view", classes="dialog-title")
            yield OptionList(*(Option(label, id=key) for key, label, _ in EXPORT_FORMATS), id="export-format", compact=True)
            yield Input(f"{self.stem}.csv", id="export-path", compact=True, select_on_focus=False)
            yield Static("[b]↑↓[/b] format  [b]tab[/b] file name  [b]enter[/b] write  [b]escape[/b] cancel",
                         classes="dialog-keys")

    def on_mount(self) -> None:
        formats = self.query_one(OptionList)
        formats.highlighted = 0
        formats.focus()

    def _ext(self, fmt: str) -> str:
        return next(ext for key, _, ext in EXPORT_FORMATS if key == fmt)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        fmt = event.option.id or "csv"
        path = self.query_one("#export-path", Input)
        old_ext = "." + self._ext(self.fmt)
        if path.value.endswith(old_ext):
            path.value = path.value[: -len(old_ext)] + "." + self._ext(fmt)
            path.cursor_position = len(path.value)
        self.fmt = fmt

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._done()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._done()

    def _done(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        self.dismiss((self.fmt, path) if path else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceScreen(Dialog, ModalScreen):
    """Pick one of a few labelled values (a job of a lineage); enter picks, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="choice.cancel")]

    def __init__(self, title: str, options: list[tuple[str, object]]) -> None:
        super().__init__()
        self.title_text = title
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*(Option(Text(label), id=str(i)) for i, (label, _v) in enumerate(self.options)),
                             id="choice-list", compact=True)
            yield Static("[b]enter[/b] open    [b]escape[/b] cancel", classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one(OptionList).highlighted = 0
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.options[int(event.option.id or 0)][1])

    def action_cancel(self) -> None:
        self.dismiss(None)
