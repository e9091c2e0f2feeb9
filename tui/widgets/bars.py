"""A results pivot as a grouped horizontal bar chart: one group per row label, one bar per column.

Horizontal bars suit a terminal (labels stay readable at 80 columns). Each series has its own
colour and, for `NO_COLOR`, its own glyph.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.widgets import Static

from tui.render import EIGHTHS

SERIES_STYLES = ["#4c9be8", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2", "#ff9da7"]
SERIES_GLYPHS = ["█", "▓", "▒", "░", "▚", "▞", "▤", "▥"]


def _bar(frac: float, width: int, glyph: str, style: str, mono: bool) -> Text:
    frac = max(0.0, min(1.0, frac))
    if mono:
        return Text(glyph * round(frac * width), style=style)
    eighths = round(frac * width * 8)
    full, part = divmod(eighths, 8)
    return Text("█" * full + (EIGHTHS[part] if part else ""), style=style)


def bars_renderable(pivot, width: int, mono: bool = False) -> RenderableType:  # noqa: ANN001 - db.results.Pivot
    if not pivot.cells:
        return Text("no values to show", style="dim")
    means = [c.mean for c in pivot.cells.values()]
    lo = min(0.0, min(means))
    hi = max(means)
    span = (hi - lo) or 1.0
    col_w = min(16, max(len(c) for c in pivot.col_labels))
    texts = {k: c.text(3) for k, c in pivot.cells.items()}
    val_w = max(len(t) for t in texts.values())
    bar_w = max(8, width - col_w - val_w - 6)
    legend = Text()
    for i, c in enumerate(pivot.col_labels):
        style = SERIES_STYLES[i % len(SERIES_STYLES)]
        legend.append(f"{SERIES_GLYPHS[i % len(SERIES_GLYPHS)] if mono else '■'} ", style=style)
        legend.append(f"{c}  ")
    lines: list[Text] = [Text(f"{pivot.metric} ({pivot.reduce})", style="dim"), legend, Text("")]
    for r in pivot.row_labels:
        lines.append(Text(r, style="bold"))
        for i, c in enumerate(pivot.col_labels):
            cell = pivot.cells.get((r, c))
            line = Text(f"  {c[:col_w]:<{col_w}} ")
            if cell is None:
                line.append("—", style="dim")
            else:
                style = SERIES_STYLES[i % len(SERIES_STYLES)]
                line.append_text(_bar((cell.mean - lo) / span, bar_w, SERIES_GLYPHS[i % len(SERIES_GLYPHS)], style, mono))
                line.append(f" {texts[(r, c)]}")
            lines.append(line)
    lines.append(Text(f"scale {lo:.3g} … {hi:.3g}", style="dim"))
    return Group(*lines)


class GroupedBars(Static):
    DEFAULT_CSS = """
    GroupedBars { width: 1fr; height: auto; padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(**kwargs)
        self.pivot = None

    def show(self, pivot) -> None:  # noqa: ANN001
        self.pivot = pivot
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        if self.pivot is not None:
            self.update(bars_renderable(self.pivot, max(30, self.size.width - 2), mono=self.app.no_color))
