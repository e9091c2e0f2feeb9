"""A bounded log view fed in batches.

The screen reads new complete lines in a thread worker (`Source.read_log`) and hands each batch
to `add_chunk`, which makes one `write_lines` call: per-line writes top out at a few thousand lines
a second on a small machine, batches do not. `max_lines` bounds memory however long the job runs.
"""

from __future__ import annotations

from textual.widgets import Log

MAX_LINES = 5000


class LogTail(Log):
    DEFAULT_CSS = """
    LogTail { height: 1fr; scrollbar-size-vertical: 1; }
    """

    def __init__(self, *, max_lines: int = MAX_LINES, **kwargs) -> None:  # noqa: ANN003
        super().__init__(max_lines=max_lines, highlight=False, auto_scroll=True, **kwargs)
        self.path: str | None = None
        self.read_offset: int | None = None  # None: not opened yet (the first read shows the file's tail)

    def follow(self, path: str | None) -> None:
        """Tail another file (or none); clears what is shown."""
        if path != self.path:
            self.path = path
            self.read_offset = None
            self.clear()

    def add_chunk(self, chunk) -> None:  # noqa: ANN001 - tui.source.LogChunk
        if chunk.path != self.path:
            return  # a late batch for a file no longer followed
        if chunk.reset:
            self.clear()
        self.read_offset = chunk.offset
        if chunk.lines:
            self.write_lines(chunk.lines)
