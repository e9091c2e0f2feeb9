"""A results pivot as a heatmap: coloured cells with their values, and a scale underneath.

Colour follows a viridis-like ramp from the lowest to the highest mean. Without colour
(`NO_COLOR`), every cell also carries a shade glyph (` ░▒▓█`) so the levels still read.
"""

from __future__ import annotations

from rich.color import Color
from rich.console import Group, RenderableType
from rich.style import Style
from rich.text import Text
from textual.widgets import Static

RAMP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
SHADES = " ░▒▓█"


def ramp(t: float) -> tuple[int, int, int]:
    t = max(0.0, min(1.0, t))
    x = t * (len(RAMP) - 1)
    i = min(int(x), len(RAMP) - 2)
    f = x - i
    a, b = RAMP[i], RAMP[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))  # type: ignore[return-value]


def _cell_style(t: float) -> Style:
    r, g, b = ramp(t)
    fg = "black" if (0.299 * r + 0.587 * g + 0.114 * b) > 140 else "white"
    return Style(bgcolor=Color.from_rgb(r, g, b), color=fg)


def heatmap_renderable(pivot, shades: bool = False, cell_width: int = 0) -> RenderableType:  # noqa: ANN001 - db.results.Pivot
    if not pivot.cells:
        return Text("no values to show", style="dim")
    means = [c.mean for c in pivot.cells.values()]
    lo, hi = min(means), max(means)
    span = hi - lo or 1.0
    texts = {k: c.text(3) for k, c in pivot.cells.items()}
    cw = cell_width or max(8, max(len(t) for t in texts.values()) + (4 if shades else 2),
                           max((len(c) for c in pivot.col_labels), default=0) + 2)
    label_w = min(28, max([len(r) for r in pivot.row_labels] + [len(pivot.rows_field)]))
    lines = []
    head = Text(f"{pivot.rows_field[:label_w]:<{label_w}} ", style="bold")
    for c in pivot.col_labels:
        head.append(f"{c[:cw - 1]:^{cw}}", style="bold")
    lines.append(head)
    for r in pivot.row_labels:
        line = Text(f"{r[:label_w]:<{label_w}} ")
        for c in pivot.col_labels:
            cell = pivot.cells.get((r, c))
            if cell is None:
                line.append(f"{'·':^{cw}}", style="dim")
                continue
            t = (cell.mean - lo) / span
            body = texts[(r, c)]
            if shades:
                body = f"{SHADES[min(4, int(t * 5))] * 2} {body}"
            line.append(f"{body[:cw - 1]:^{cw}}", style=_cell_style(t))
        lines.append(line)
    lines.append(Text(""))
    scale = Text(f"{'scale':<{label_w}} ")
    steps = max(10, min(40, cw * max(1, len(pivot.col_labels)) - 16))
    scale.append(f"{lo:.3g} ")
    for i in range(steps):
        t = i / (steps - 1)
        scale.append(SHADES[min(4, int(t * 5))] if shades else " ", style=_cell_style(t))
    scale.append(f" {hi:.3g}")
    lines.append(scale)
    title = Text(f"{pivot.metric} ({pivot.reduce}; mean ± std over jobs in a cell)", style="dim")
    return Group(title, *lines)


class Heatmap(Static):
    DEFAULT_CSS = """
    Heatmap { width: auto; height: auto; padding: 0 1; }
    """

    def show(self, pivot) -> None:  # noqa: ANN001
        self.update(heatmap_renderable(pivot, shades=self.app.no_color))
