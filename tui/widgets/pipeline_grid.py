"""An experiment's pipeline as a grid: stages as rows, matrix points as columns (no Textual).

Shared by the experiments screen's preview (a Rich table under the list) and the pipeline
screen (an interactive DataTable): the glyph of a cell, the column labels, the table itself.
"""

from __future__ import annotations

import os.path

from rich.table import Table
from rich.text import Text

from tui.render import STATUS_ICON, STATUS_STYLE, st

ATTENTION = ("failed", "interrupted", "running", "queued", "cancelled", "skipped", "succeeded")


def cell_text(jobs) -> Text:  # noqa: ANN001 - list[db.experiments.StageJob]
    """One job: its glyph, and its progress while it runs; several: a count per state."""
    if not jobs:
        return Text("")
    if len(jobs) == 1:
        j = jobs[0]
        out = Text(STATUS_ICON.get(j.status, "?"), style=st(STATUS_STYLE.get(j.status, "")), justify="center")
        if j.status == "running" and j.fraction is not None:
            out.append(f" {j.fraction * 100:.0f}%", style=st("cyan"))
        return out
    out = Text(justify="center")
    for status in ATTENTION:
        n = sum(1 for j in jobs if j.status == status)
        if n:
            if out:
                out.append(" ")
            out.append(f"{STATUS_ICON.get(status, '?')}{n}", style=st(STATUS_STYLE.get(status, "")))
    return out


def short_labels(values: list[str]) -> dict[str, str]:
    """Column labels without the prefix every value of an axis shares (`teacher-a` -> `a`),
    cut at a separator so that what is left still reads as a name."""
    prefix = os.path.commonprefix(values) if len(set(values)) > 1 else ""
    cut = max(prefix.rfind(c) for c in "-_/.:") + 1 if prefix else 0
    return {v: (v[cut:] or v) for v in values}


def stage_label(stage: str | None) -> str:
    return stage if stage is not None else "jobs"



def header_labels(p, room: int) -> list[list[str]]:  # noqa: ANN001 - db.experiments.Pipeline
    """One list of header lines (an axis value per line) per point: full values when the columns
    fit in `room` cells, else without the prefix each axis shares (`teacher-a` -> `a`)."""
    if not p.axes:
        return [["jobs"]]
    full = [list(pt) for pt in p.points]
    need = sum(max(5, *map(len, lines)) + 2 for lines in full)
    if need <= room:
        return full
    short = [short_labels(sorted({pt[i] for pt in p.points})) for i in range(len(p.axes))]
    return [[short[a][v] for a, v in enumerate(pt)] for pt in p.points]


def grid(p, width: int) -> Table:  # noqa: ANN001 - db.experiments.Pipeline
    """The pipeline as a Rich table `width` cells wide at most (the experiments screen's preview)."""
    needs = {s: ", ".join(stage_label(n) for n in p.needs.get(s, [])) for s in p.stages}
    stage_w = max(5, *(len(stage_label(s)) for s in p.stages))
    needs_w = max(8, *map(len, needs.values()))
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold", expand=False)
    table.add_column("stage", no_wrap=True, width=stage_w)
    table.add_column("waits on", no_wrap=True, style="dim", width=needs_w)
    for lines in header_labels(p, width - stage_w - needs_w - 4):
        table.add_column("\n".join(lines), justify="center", no_wrap=True, min_width=5)
    for stage in p.stages:
        table.add_row(Text(stage_label(stage), style="bold"), needs[stage],
                      *(cell_text(p.cell(stage, point)) for point in p.points))
    return table
