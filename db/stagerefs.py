"""Stage references in stored specs: symbolic until the job runs.

A pipeline stage that reads an earlier stage's result (`${stages.gen.output}` in a spec file) is
stored with a reference by job id, `${job:12.output}` (or `.outputs`, `.run_dir`), not with a path.
The worker turns it into a path when it prepares the run folder, by following the job's own
dependency rows: the reference names job 12, and the dependency that is job 12 or a retry of it
(its `parent_id` chain) is the one whose folder is used. So a retry only re-points dependency rows;
no stored spec text is ever rewritten, and a symlinked or moved home changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from db.home import run_dir
from db.models import Job, JobDependency

REF = re.compile(r"\$\{job:(\d+)\.(output|outputs|run_dir)\}")


def marker(job_id: int, attr: str) -> str:
    return f"${{job:{job_id}.{attr}}}"


def referenced(spec_json: str) -> set[int]:
    return {int(m.group(1)) for m in REF.finditer(spec_json)}


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


def targets(session: Session, job_id: int, refs: set[int]) -> dict[int, tuple[int, str]]:
    """For each referenced id: (the job whose folder it means now, that job's kind).

    The job's dependencies are searched for the referenced job or one of its retries; a reference
    that no dependency matches (a spec copied by hand) means the referenced job itself.
    """
    deps = list(session.execute(select(JobDependency.depends_on_id).where(JobDependency.job_id == job_id)).scalars())
    out: dict[int, tuple[int, str]] = {}
    for dep in deps:
        chain = dep
        seen = set()
        while chain is not None and chain not in seen:
            seen.add(chain)
            if chain in refs and chain not in out:
                kind = session.execute(select(Job.kind).where(Job.id == dep)).scalar_one()
                out[chain] = (dep, kind)
            chain = session.execute(select(Job.parent_id).where(Job.id == chain)).scalar_one_or_none()
    for ref in refs - set(out):
        kind = session.execute(select(Job.kind).where(Job.id == ref)).scalar_one_or_none()
        out[ref] = (ref, kind or "")
    return out


def resolve(session: Session, home: Path, job_id: int, spec_json: str,
            primary_output: Mapping[str, str]) -> dict[str, Any]:
    """The job's spec with every stage reference turned into a path (what its run folder gets)."""
    spec = json.loads(spec_json)
    refs = referenced(spec_json)
    if not refs:
        return spec
    found = targets(session, job_id, refs)

    def path(m: re.Match[str]) -> str:
        dep, kind = found[int(m.group(1))]
        folder = run_dir(home, dep)
        if m.group(2) == "run_dir":
            return str(folder)
        if m.group(2) == "outputs":
            return str(folder / "outputs")
        return str(folder / primary_output.get(kind, "outputs"))

    return _walk(spec, lambda s: REF.sub(path, s) if "${job:" in s else s)
