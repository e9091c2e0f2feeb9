"""Resumable, kill-safe jsonl output for jobs that produce one row per input record.

Rows are appended to `outputs/<name>.partial.<rank>.jsonl` after every batch (one `write` per row,
then flush and fsync), so SIGKILL loses at most the batch in flight, and a torn last line is cut
off on the next start. A rerun reads what is there and skips those records. When every record is
done, the rows are written to `outputs/<name>.jsonl` in dataset order (temp file + rename, so a
reader never sees half a file) and the partial files are removed: the final file exists only for
a complete result, which is what a pipeline's `${stages.X.output}` should point at.

A fingerprint of everything that determines the rows (parameters and a hash of the inputs) is
kept next to them; resuming with different parameters is refused instead of mixing two results.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.jobs._common import JobInputError, hold_point

INDEX = "_index"


def fingerprint(params: dict[str, Any], inputs: Iterable[str]) -> dict[str, Any]:
    """Parameters plus a sha256 over the input texts, in order."""
    h = hashlib.sha256()
    n = 0
    for text in inputs:
        h.update(text.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        n += 1
    return {"params": params, "inputs_sha256": h.hexdigest(), "n_inputs": n}


class ResumableRows:
    def __init__(self, outputs: Path, name: str, fp: dict[str, Any], rank: int = 0) -> None:
        self.outputs = outputs
        self.name = name
        self.final = outputs / f"{name}.jsonl"
        self.meta = outputs / f"{name}.fingerprint.json"
        self.partial = outputs / f"{name}.partial.{rank}.jsonl"
        self.fp = fp
        self.rank = rank
        self._fh = None
        self._appended = 0  # rows this attempt wrote

    # -- start-up ------------------------------------------------------------------------------

    def check_fingerprint(self) -> None:
        """Refuse to mix results of different parameters; record ours on a fresh start (rank 0)."""
        if self.meta.exists():
            try:
                old = json.loads(self.meta.read_text(encoding="utf-8"))
            except ValueError:
                old = None
            if old is not None and old != self.fp:
                changed = _diff(old, self.fp)
                raise JobInputError(
                    f"{self.final.parent.name}/{self.final.name}: earlier output was made with different {changed}; "
                    "start a new job instead of resuming this one"
                )
        elif self.rank == 0:
            tmp = self.meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.fp, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.meta)

    def done(self) -> dict[int, dict[str, Any]]:
        """Rows already written (final file and every rank's partial file), by dataset index."""
        rows: dict[int, dict[str, Any]] = {}
        if self.final.exists():
            for i, row in enumerate(_read_jsonl(self.final, repair=False)):
                rows[i] = row
            return rows
        for part in sorted(self.outputs.glob(f"{self.name}.partial.*.jsonl")):
            for row in _read_jsonl(part, repair=part == self.partial):
                if isinstance(row.get(INDEX), int):
                    rows[row[INDEX]] = row
        return rows

    # -- writing -------------------------------------------------------------------------------

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows (each with `_index`) and make them durable before returning."""
        if not rows:
            return
        if self._fh is None:
            self._fh = open(self.partial, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        data = "".join(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows)
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._appended += len(rows)
        hold_point(self._appended)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def finalize(self, n_total: int, keep_index: bool = False) -> Path:
        """Write the final file in dataset order and drop the partial files. Rank 0 only."""
        self.close()
        rows = self.done()
        missing = [i for i in range(n_total) if i not in rows]
        if missing:
            raise RuntimeError(f"{len(missing)} records have no output (first: {missing[0]})")
        tmp = self.final.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for i in range(n_total):
                row = dict(rows[i])
                if not keep_index:
                    row.pop(INDEX, None)
                fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.final)
        for part in self.outputs.glob(f"{self.name}.partial.*.jsonl"):
            part.unlink()
        return self.final


def _read_jsonl(path: Path, repair: bool) -> list[dict[str, Any]]:
    """Complete lines of a jsonl file; with `repair`, a torn last line (killed mid-write) is cut off."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    if end + 1 != len(data) and repair:
        with open(path, "r+b") as fh:
            fh.truncate(end + 1)
    rows = []
    for raw in data[: end + 1].splitlines():
        if raw.strip():
            try:
                rows.append(json.loads(raw))
            except ValueError:
                continue  # a line torn by a crash in the middle of the file cannot happen with append-only writes
    return rows


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("inputs_sha256") != new.get("inputs_sha256"):
        return "inputs (the records or prompts changed)"
    op, np_ = old.get("params", {}), new.get("params", {})
    keys = sorted(k for k in set(op) | set(np_) if op.get(k) != np_.get(k))
    return "parameters: " + ", ".join(keys[:6]) if keys else "parameters"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json(path: Path, data: Any) -> None:
    """Atomically write a small JSON file (summary, metadata)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable, allow_nan=True), encoding="utf-8")
    os.replace(tmp, path)
