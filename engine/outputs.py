"""Where each job kind leaves its main result inside its run folder.

`${stages.X.output}` (and a job's "output" in lineage) means this path. It lives apart from the
spec classes so that the worker, which resolves stage references when it prepares a run folder,
does not import pydantic and every spec class to read a five-entry table.
"""

from __future__ import annotations

PRIMARY_OUTPUT = {
    "command": "outputs",
    "generate": "outputs/records.jsonl",
    "score": "outputs/records.jsonl",
    "finetune": "outputs/model",
    "merge": "outputs/model",
}
