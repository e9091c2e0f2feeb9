"""Results renderings survive any label: LaTeX's and Markdown's special characters come out literal."""

from __future__ import annotations

from db.formats import to_latex, to_markdown
from db.results import pivot
from db.rows import ResultRow

NASTY = r"a_b {c} ~d ^e & f% $g #h \i |j"


def _pivot():  # noqa: ANN202
    rows = [ResultRow(1, "x", "command", "succeeded", {"model": NASTY, "data": "p|q"}, {}, 0.5),
            ResultRow(2, "y", "command", "succeeded", {"model": "plain", "data": "p|q"}, {}, 0.25)]
    return pivot(rows, "exp", "wr", "model", "data")


def test_latex_escapes_every_special_character() -> None:
    tex = to_latex(_pivot())
    want = (r"a\_b \{c\} \textasciitilde{}d \textasciicircum{}e \& f\% \$g \#h \textbackslash{}i |j")
    assert want + " & 0.5" in tex
    assert r"model \textbackslash{} data & p|q \\" in tex
    row = [line for line in tex.splitlines() if line.startswith("a")][0]
    assert row.split(" & ")[0] == want  # the label is one cell: its & is escaped, not a column break


def test_markdown_escapes_the_cell_separator() -> None:
    md = to_markdown(_pivot())
    lines = md.splitlines()
    assert lines[0] == r"| model \ data | p\|q |"
    cells = [line for line in lines if "a_b" in line][0]
    assert cells.count(" | ") == 1 and r"\\i \|j" in cells  # two cells: the label and the value
