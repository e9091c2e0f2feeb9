"""Text renderings of a results pivot: CSV, Markdown, LaTeX and JSON (the CLI and the TUI share them)."""

from __future__ import annotations

import csv
import io
import json

from db.results import Pivot


def _header(p: Pivot) -> list[str]:
    return [f"{p.rows_field} \\ {p.cols_field}" if p.cols_field else p.rows_field, *p.col_labels]


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


def to_markdown(p: Pivot) -> str:
    head = _header(p)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in p.row_labels:
        lines.append("| " + " | ".join([r, *(_cell(p, r, c) for c in p.col_labels)]) + " |")
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        s = s.replace(a, b)
    return s


def to_latex(p: Pivot) -> str:
    cols = "l" + "r" * len(p.col_labels)
    lines = [rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_tex(h) for h in _header(p)) + r" \\", r"\midrule"]
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
