"""What differs between the specs of two or more jobs, and nothing else."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from tui.source import flatten

MISSING = object()


def spec_differences(specs: Sequence[dict[str, Any]]) -> tuple[list[tuple[str, list[Any]]], int]:
    """(field, value per spec) for every dotted field whose values are not all equal; and how many are."""
    flat = [flatten(s) for s in specs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    diffs = []
    same = 0
    for k in keys:
        values = [f.get(k, MISSING) for f in flat]
        if all(json.dumps(v, sort_keys=True, default=str) == json.dumps(values[0], sort_keys=True, default=str)
               for v in values[1:]) and MISSING not in values:
            same += 1
        else:
            diffs.append((k, values))
    return diffs, same


def _show(v: Any) -> Text:
    if v is MISSING:
        return Text("—", style="dim")
    if isinstance(v, str):
        return Text(v)
    return Text(json.dumps(v, default=str))


class SpecDiff(DataTable):
    """Rows: the fields that differ; columns: the jobs."""

    DEFAULT_CSS = """
    SpecDiff { height: 1fr; scrollbar-size-vertical: 1; }
    """

    def __init__(self, **kwargs) -> None:  # noqa: ANN003
        super().__init__(cursor_type="row", **kwargs)
        self.same = 0

    def show(self, jobs: Sequence[tuple[int, str, dict[str, Any]]]) -> None:
        self.clear(columns=True)
        diffs, self.same = spec_differences([s for _, _, s in jobs])
        # explicit widths (auto-sizing is measured lazily and was flaky in snapshots), at most 40
        self.add_column("field", key="field", width=min(40, max([5, *(len(k) for k, _ in diffs)])))
        for i, (jid, name, _) in enumerate(jobs):
            label = f"#{jid} {name}"[:20]
            width = max([len(label), *(_show(values[i]).cell_len for _, values in diffs)])
            self.add_column(label, key=str(jid), width=min(28, width))
        for k, values in diffs:
            self.add_row(Text(k, style="bold"), *(_show(v) for v in values), key=k)
