"""Column widths of the jobs table, from what the page shows (no Textual; unit-tested).

Fixed widths cut a pipeline's names (`judge[teacher=teacher-a,student=student-llama]`) to ten
characters while an experiment column repeated one value on every row. Here each column is as
wide as its content; a column that says the same on every row of the page (one experiment, one
kind, no GPUs) or nothing at all (no ETA, no metric) is left out; the name gets the rest. When
the name still does not fit, wide columns shrink first, then the least useful ones go.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDE = 120  # at this width and above, statuses carry an icon and progress bars are longer

# Columns that may go when the name needs the room, least useful first.
DROP_ORDER = ("kind", "gpus", "eta", "elapsed", "experiment", "metric", "reason")
# Columns left out when every row of the page shows the same value in them.
HIDE_WHEN_SAME = ("experiment", "kind", "gpus")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int


def gpus_text(r) -> str:  # noqa: ANN001 - db.rows.JobRow
    return r.assigned_gpus or (f"×{r.gpus_requested}" if r.gpus_requested else "-")


def status_width(r, wide: bool) -> int:  # noqa: ANN001
    n = len(r.status) + (2 if wide else 0)
    if wide and r.attempt > 1:
        n += len(f" #{r.attempt}")
    return n


def layout(rows: Sequence, width: int, *, metric: str | None, metric_texts: Sequence[str] = (),
           reasons: Sequence[str] = (), padding: int = 1) -> list[Column]:
    """The columns (in order) and widths for a page of `rows` at `width` cells."""
    wide = width >= WIDE
    metric_label = (metric or "metric")[:10]
    natural: dict[str, tuple[str, int]] = {
        "id": ("id", max([2, *(len(str(r.id)) + 1 for r in rows)])),
        "experiment": ("experiment", min(24, max([10, *(len(r.experiment) for r in rows)]))),
        "kind": ("kind", max([4, *(len(r.kind) for r in rows)])),
        "name": ("name", max([4, *(len(r.name) for r in rows)])),
        "status": ("status", max([6, *(status_width(r, wide) for r in rows)])),
        "reason": ("waits for", min(32, max([9, *map(len, reasons)]))),
        "gpus": ("GPU", max([3, *(len(gpus_text(r)) for r in rows)])),
        "progress": ("progress", 16 if wide else 10),
        "elapsed": ("elapsed", 7),
        "eta": ("ETA", 6),
        "metric": (metric_label, min(10, max([len(metric_label), *map(len, metric_texts)]))),
    }
    keys = list(natural)
    if rows:
        for k in HIDE_WHEN_SAME:
            if k in keys and len({_value(r, k) for r in rows}) == 1:
                keys.remove(k)
        if not any(r.started_at is not None for r in rows):
            keys.remove("elapsed")
        if not any(r.status == "running" and r.eta_s is not None for r in rows):
            keys.remove("eta")
        if not any(r.fraction is not None or r.status == "succeeded" for r in rows):
            keys.remove("progress")
    if not any(metric_texts):
        keys.remove("metric")
    if not any(reasons):
        keys.remove("reason")
    widths = {k: natural[k][1] for k in keys}
    want = widths["name"]

    def room() -> int:
        others = sum(w for k, w in widths.items() if k != "name")
        return width - others - 2 * padding * len(widths) - 1  # the vertical scrollbar

    if room() < want:  # shrink the wide ones before anything goes
        for k, w in (("progress", 10), ("experiment", 12), ("reason", 24)):
            if k in widths:
                widths[k] = min(widths[k], w)
    target = min(want, max(24, width * 2 // 5 if wide else width // 3))
    for k in DROP_ORDER:
        if room() >= target:
            break
        widths.pop(k, None)
    widths["name"] = max(10, room())
    return [Column(k, natural[k][0], widths[k]) for k in keys if k in widths]


def _value(r, key: str) -> str:  # noqa: ANN001
    if key == "gpus":
        return gpus_text(r)
    return str(getattr(r, key))
