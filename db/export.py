"""Export an experiment's jobs as flat rows: identity, status, parameters and latest metrics.

One row per job, columns `param.<name>` and `metric.<name>`: what a notebook wants to load with
pandas, and what MLflow's and W&B's run tables export.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from db.files import write_atomic, write_text_atomic
from db.reads import as_connection, latest_metrics
from db.redact import redact_json


def export_rows(c: Any, experiment: str) -> list[dict[str, Any]]:
    """One flat row per job of `experiment` (a store session or a sqlite3 connection)."""
    con = as_connection(c)
    exp = con.execute("SELECT id FROM experiment WHERE name = ?", (experiment,)).fetchone()
    if exp is None:
        raise LookupError(f"experiment {experiment!r}: no such experiment")
    jobs = con.execute(
        "SELECT id, name, kind, status, attempt, queued_at, started_at, finished_at, failure_reason, spec, params "
        "FROM job WHERE experiment_id = ? ORDER BY id", (exp[0],)).fetchall()
    metrics = latest_metrics(con, [j[0] for j in jobs])
    rows = []
    for jid, name, kind, status, attempt, queued, started, finished, reason, spec, params in jobs:
        row: dict[str, Any] = {
            "id": jid, "experiment": experiment, "name": name, "kind": kind, "status": status,
            "attempt": attempt, "queued_at": queued, "started_at": started,
            "finished_at": finished, "failure_reason": reason, "spec": redact_json(spec),
        }
        row |= {f"param.{k}": v for k, v in json.loads(params or "{}").items()}
        row |= {f"metric.{k}": v for k, v in sorted(metrics.get(jid, {}).items())}
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    return cols


def _scalar(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (dict, list)) else v


def write_export(rows: list[dict[str, Any]], fmt: str, output: str | Path | None) -> None:
    """Write rows as csv, json or parquet to `output` (stdout when None, text formats only).

    The file is written through `db.files.write_atomic` (an unpredictable O_EXCL temporary file
    beside it, then renamed), so a failed export never leaves a half-written file behind.
    """
    cols = _columns(rows)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: _scalar(r.get(c)) for c in cols} for r in rows])
        assert output is not None
        write_atomic(output, lambda fh: pq.write_table(table, fh))
        return
    if fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: _scalar(r.get(c)) for c in cols})
        text = buf.getvalue()
    else:
        raise ValueError(f"--format: {fmt!r} is not one of csv, json, parquet")
    if output is None:
        sys.stdout.write(text)
        return
    write_text_atomic(output, text)
