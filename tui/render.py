"""Small pure helpers that turn values into text: durations, bars, status labels, GPU summaries.

No Textual here, only Rich `Text`, so every widget (and the CLI) can use them and tests can check
them without an app. Bars use block glyphs for the filled part and a shade for the empty part, so
they stay readable without colour (`NO_COLOR`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.text import Text

_COLOR = True  # False under NO_COLOR: text keeps bold/dim but never depends on a colour


def use_color(on: bool) -> None:
    """The app calls this once: under NO_COLOR, Textual turns colours into greys by luminance,
    which makes red text on a dark background nearly invisible; our styles drop colour instead."""
    global _COLOR
    _COLOR = on


def st(style: str) -> str:
    """`style` without its colours when colour is off (attributes like bold stay)."""
    if _COLOR or not style:
        return style
    return " ".join(w for w in style.split() if w in ("bold", "dim", "italic", "underline", "reverse"))


EIGHTHS = " ▏▎▍▌▋▊▉"
EMPTY = "░"

STATUS_STYLE = {
    "running": "bold cyan",
    "queued": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "interrupted": "magenta",
    "skipped": "dim",
}
STATUS_ICON = {
    "running": "▶",
    "queued": "…",
    "succeeded": "✔",
    "failed": "✘",
    "cancelled": "■",
    "interrupted": "!",
    "skipped": "↷",
}


def duration(seconds: float | None) -> str:
    """12s, 4m05s, 2h07m, 3d04h; empty for None."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def timestamp(t: float | None) -> str:
    """Local time, to the second; '—' for None."""
    if t is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    return f"{duration(now - t)} ago"


def bar(fraction: float | None, width: int, style: str = "cyan", empty_style: str = "grey35") -> Text:
    """A horizontal bar `width` cells wide, with eighth-block resolution."""
    text = Text()
    if width <= 0:
        return text
    if fraction is None:
        return Text(EMPTY * width, style=st(empty_style))
    f = max(0.0, min(1.0, fraction))
    eighths = round(f * width * 8)
    full, part = divmod(eighths, 8)
    text.append("█" * full, style=st(style))
    if part and full < width:
        text.append(EIGHTHS[part], style=st(style))
        full += 1
    if full < width:
        text.append(EMPTY * (width - full), style=st(empty_style))
    return text


def progress_cell(fraction: float | None, width: int, status: str) -> Text:
    """Bar plus percentage, e.g. `████▌░░ 62%`, sized to `width` cells."""
    if fraction is None:
        if status == "succeeded":
            fraction = 1.0
        else:
            return Text("")
    pct = f"{fraction * 100:3.0f}%"
    style = "green" if status == "succeeded" else ("red" if status == "failed" else "cyan")
    out = bar(fraction, max(1, width - len(pct) - 1), style=style)
    out.append(" " + pct)
    return out


def plain_status(status: object) -> str:
    """'queued' for both 'queued' and JobStatus.queued (a str enum formats as 'JobStatus.queued')."""
    return str(getattr(status, "value", status))


def status_text(status: str, icon: bool = True, width: int | None = None) -> Text:
    status = plain_status(status)
    label = f"{STATUS_ICON.get(status, '?')} {status}" if icon else status
    if width is not None and len(label) > width:
        label = label[: width - 1] + "…"
    return Text(label, style=st(STATUS_STYLE.get(status, "")))


def number(v: float | None) -> str:
    if v is None:
        return ""
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e7:
        return str(int(v))
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.3g}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.4g}"


def gib(mb: float) -> str:
    return f"{mb / 1024:.1f}"


def gpu_summary(gpus: Iterable, width: int = 60) -> Text:  # noqa: ANN001 - db.queries.GpuInfo
    """One line: `GPU0 34% 40/80G · GPU1 idle 1/80G`, shortened to fit `width`."""
    parts = []
    for g in gpus:
        util = "?" if g.util_pct is None else ("idle" if g.util_pct < 1 else f"{g.util_pct:.0f}%")
        parts.append(f"{g.index}:{util} {g.mem_used_mb / 1024:.0f}/{g.mem_total_mb / 1024:.0f}G")
    if not parts:
        return Text("no GPU data", style="dim")
    line = "GPU " + " · ".join(parts)
    if len(line) > width:
        busy = sum(1 for g in gpus if (g.util_pct or 0) >= 1 or g.processes)
        line = f"GPUs {len(parts)} ({busy} busy)"
    return Text(line)


STATE_BAR_ORDER = ("succeeded", "running", "queued", "failed", "interrupted", "cancelled", "skipped")
STATE_GLYPH = {"succeeded": "█", "running": "▓", "queued": "░", "failed": "▒", "interrupted": "▒",
               "cancelled": "·", "skipped": "·"}


def state_counts(counts: dict[str, int]) -> Text:
    """`✔12 ▶1 …3 ✘2`: jobs by state, in the order that needs attention least to most."""
    out = Text()
    for status in STATE_BAR_ORDER:
        n = counts.get(status)
        if n:
            if out:
                out.append(" ")
            out.append(f"{STATUS_ICON[status]}{n}", style=st(STATUS_STYLE[status]))
    return out


def state_bar(counts: dict[str, int], width: int) -> Text:
    """A stacked bar of jobs by state, `width` cells; each state has its own glyph, so it reads
    without colour too. A state with any job gets at least one cell."""
    total = sum(counts.values())
    out = Text()
    if width <= 0 or total == 0:
        return Text(EMPTY * max(0, width), style=st("grey35"))
    present = [s for s in STATE_BAR_ORDER if counts.get(s)]
    cells = {s: max(1, round(counts[s] / total * width)) for s in present}
    while sum(cells.values()) > width:  # rounding up the small ones: take back from the largest
        big = max(cells, key=lambda s: cells[s])
        if cells[big] <= 1:
            break
        cells[big] -= 1
    for s in present:
        out.append(STATE_GLYPH[s] * cells[s], style=st(STATUS_STYLE[s].replace("bold ", "")))
    if out.cell_len < width:
        out.append(" " * (width - out.cell_len))
    return out


def size_text(n: int | None) -> str:
    """1.2G, 340M, 12K; empty for None (not measured yet)."""
    if n is None:
        return ""
    for unit, div in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n}B"
