"""Plain-text output for the inspection commands: aligned columns and terminal-safe strings.

`ls` and `show` print with the standard library, not rich: importing rich costs about as much as
the rest of `labdeck ls`, and the inspection commands must answer within 3x `labdeck --help`.

Job names, failure details and logs are written by job processes (and, on a shared box, maybe by
someone else's spec), so escape sequences in them must never reach the terminal: a log line could
otherwise retitle the window, rewrite what `show` printed above it or, on some terminals, answer
back into the shell. `safe()` turns every control character except newline and tab into a visible
escape (`\\x1b`), so the text shows what is there and the terminal interprets nothing.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import TextIO

# C0 controls except \t and \n, DEL, and the C1 controls (8-bit CSI/OSC introducers among them).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    return "\\n" if m.group() == "\r" else f"\\x{ord(m.group()):02x}"


def safe(text: str, keep_lines: bool = True) -> str:
    """`text` with control characters made visible; `keep_lines=False` escapes newlines and tabs too."""
    out = _CONTROL.sub(_escape, text)
    if not keep_lines:
        out = out.replace("\n", "\\n").replace("\t", "\\t")
    return out


def safe_log(text: str) -> str:
    """A log chunk for a terminal: carriage returns (progress bars) become new lines, other controls visible."""
    return _CONTROL.sub(lambda m: "\n" if m.group() == "\r" else f"\\x{ord(m.group()):02x}", text)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell (two spaces apart); `right` lists right-aligned column indices."""
    cells = [[safe(str(c), keep_lines=False) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def is_terminal(stream: TextIO | None = None) -> bool:
    s = stream or sys.stdout
    try:
        return s.isatty()
    except (AttributeError, ValueError):
        return False
