"""Text renderings of a results pivot: CSV, Markdown, LaTeX and JSON (the CLI and the TUI share them)."""

from __future__ import annotations

import csv
import io
import json

from db.results import Pivot


def _header(p: Pivot, esc=lambda s: s, sep: str = " \\ ") -> list[str]:  # noqa: ANN001 - a str -> str escape
    """The header row; `esc` escapes the field names and labels, `sep` is labdeck's own rows-vs-columns mark."""
    corner = f"{esc(p.rows_field)}{sep}{esc(p.cols_field)}" if p.cols_field else esc(p.rows_field)
    return [corner, *(esc(c) for c in p.col_labels)]


def _cell(p: Pivot, r: str, c: str) -> str:
    cell = p.cells.get((r, c))
    return "" if cell is None else cell.text()


def to_csv(p: Pivot) -> str:
    """One column for the mean and one for the std of every column label, so a spreadsheet can use them."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([p.rows_field] + [x for c in p.col_labels for x in (f"{c}", f"{c} std", f"{c} n")])
    for r in p.row_labels:
        line: list[object] = [r]
        for c in p.col_labels:
            cell = p.cells.get((r, c))
            line += ["", "", ""] if cell is None else [cell.mean, "" if cell.std is None else cell.std, cell.n]
        w.writerow(line)
    return out.getvalue()


def _md(s: str) -> str:
    """A Markdown table cell: a '|' would end the cell and a newline the row (backslash first, so
    an escape already in the text stays literal)."""
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def to_markdown(p: Pivot) -> str:
    head = _header(p, _md)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in p.row_labels:
        lines.append("| " + " | ".join(_md(x) for x in [r, *(_cell(p, r, c) for c in p.col_labels)]) + " |")
    return "\n".join(lines) + "\n"


# LaTeX's special characters in text, each with what prints it literally. One pass, so the braces
# an escape introduces are never escaped again.
_TEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
        "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def to_latex(p: Pivot) -> str:
    cols = "l" + "r" * len(p.col_labels)
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_header(p, _tex, r" \textbackslash{} ")) + r" \\", r"\midrule"]
    for r in p.row_labels:
        cells = []
        for c in p.col_labels:
            cell = p.cells.get((r, c))
            cells.append("" if cell is None else (f"{cell.mean:.4g}" if cell.std is None else f"{cell.mean:.4g} $\\pm$ {cell.std:.2g}"))
        lines.append(" & ".join([_tex(r), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_json(p: Pivot) -> str:
    return json.dumps(p.as_dict(), indent=2) + "\n"


RENDERERS = {"csv": to_csv, "markdown": to_markdown, "latex": to_latex, "json": to_json}
