"""The results view's reads: one metric of an experiment's jobs, and the fields to pivot it by.

A mixin of `tui.source.Source` (it needs `store`), with the pure helpers the pivot controls use.
Without a metric, an experiment opens on its main view (`db.experiments.main_view`): the last
stage's outcome metric by the matrix axes, which the results screen follows as stages report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from db.queries import ResultRow


@dataclass(frozen=True)
class ResultsData:
    experiment: str
    metric: str | None
    reduce: str
    metric_names: tuple[str, ...]
    fields: tuple[str, ...]  # what rows and columns can be grouped by
    rows: tuple[ResultRow, ...]
    default_rows: str | None = None  # the experiment's own axes (db.experiments.main_view)
    default_cols: str | None = None


def flatten(spec: Any, prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; lists stay values. A model reference shows as its path."""
    out: dict[str, Any] = {}
    if isinstance(spec, dict):
        for k, v in spec.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = spec
    return out


def varying_fields(rows: Sequence[ResultRow]) -> list[str]:
    """Pivot field candidates: sweep parameters first, then spec fields whose value differs between jobs."""
    params: list[str] = []
    for r in rows:
        params += [k for k in r.params if k not in params]
    seen: dict[str, set[str]] = {}
    for r in rows:
        for k, v in flatten(r.spec).items():
            seen.setdefault(k, set()).add(repr(v))
    spec_fields = [k for k, vals in seen.items() if len(vals) > 1 and k not in params and k != "name"]
    return params + spec_fields + ["kind", "status", "name"]


def metric_families(names: Sequence[str]) -> list[str]:
    """'auroc/*' for every 'auroc/<group>' metric (a score job's per-group values, e.g. per MMLU subject)."""
    return sorted({n.split("/", 1)[0] + "/*" for n in names if "/" in n and n.split("/", 1)[0]})


def family_fields(rows: Sequence[ResultRow], fields: list[str]) -> list[str]:
    """Pivot fields for a metric family: 'group' first, then the varying axes (joined: 'model,method')."""
    axes = []
    for k in fields:
        if k in ("stage", "group", "metric", "kind", "status", "name") or "." in k:
            continue
        if len({repr(r.params.get(k)) for r in rows}) > 1 and k in {p for r in rows for p in r.params}:
            axes.append(k)
    second = [",".join(axes)] if axes else []  # the columns: every varying axis, joined
    return ["group", *second, *[f for f in fields if f not in ("group", *second)]]



class ResultsSource:
    """Mixed into `Source`."""

    store: Any

    def results(self, experiment: str, metric: str | None = None, reduce: str = "last") -> ResultsData:
        """One metric of an experiment's jobs; without `metric` (or one no job reported yet), the
        experiment's main view: its last stage's outcome metric by its matrix axes."""
        from db import queries as Q
        from db.experiments import main_view

        with self.store.read() as s:
            plain = Q.experiment_metric_names(s, experiment)
            names = tuple(sorted(set(plain) | set(metric_families(plain))))
            view = main_view(s, experiment)
            if metric not in names:
                metric = view.metric if view.metric in names else (names[0] if names else None)
            rows: list[ResultRow] = Q.experiment_metric(s, experiment, metric, reduce) if metric else []
        # a pipeline's metric comes from some of its stages: the others' jobs are not "missing" it
        stages = {r.params.get("stage") for r in rows if r.value is not None}
        if stages and None not in stages:
            rows = [r for r in rows if r.params.get("stage") in stages]
        fields = varying_fields(rows)
        if metric is not None and Q.is_metric_pattern(metric):
            fields = family_fields(rows, fields)
        axes = (view.rows, view.cols) if metric == view.metric else (None, None)
        return ResultsData(experiment, metric, reduce, names, tuple(fields), tuple(rows), *axes)

