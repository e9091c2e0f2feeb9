"""Spec files: one job, a sweep, or a pipeline, read from YAML or JSON and expanded into job drafts.

A file holds one of three shapes:

* a single job: the top-level keys of its kind (`experiment`, `name`, `kind`, ...);
* a single job with `sweep: {grid: {field: [values...]}, seeds: [...]}`: one job per grid point
  and seed (dotted field names reach into nested fields, e.g. `lora.r`);
* a pipeline: `experiment`, optional `matrix` (named axes), optional `defaults` (fields every
  stage gets), optional `variants` (named overlays, see `apply_variant`) and `stages`, a list of jobs with a `name` each. A stage may `foreach` over matrix
  axes, refer to an earlier stage's result as `${stages.NAME.output}` (which also makes it depend
  on that stage), list `needs: [NAME]`, carry its own `sweep`, and name fixed `params` recorded
  with its jobs for the results pivot (e.g. `params: {method: zero_shot}` next to a `method` axis). Where both stages run over the
  same axes, each job is matched with the upstream job of the same axis values; otherwise it gets
  every upstream job (the reference becomes a list).

Everything is validated before anything is stored: `expand_file` either returns every draft or
raises `SpecError` with one line naming the file, the field and why.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from engine.pipeline import apply_variant, expand_pipeline
from engine.specjobs import (  # noqa: F401 - the public names callers import from here
    Expansion,
    SpecError,
    _draft,
    _fail,
    _point_name,
    _point_params,
    _set_path,
    _substitute_vars,
    _sweep_points,
    builtin_vars,
    load_file,
    load_text,
    validate_one,
)


def expand(
    data: dict[str, Any], source: str = "<spec>", variables: dict[str, Any] | None = None, variant: str | None = None
) -> Expansion:
    """Expand a loaded spec mapping into validated drafts, or raise SpecError.

    `variables` override the file's `vars:` (the CLI's `--var NAME=VALUE`); `variant` picks one of
    a pipeline's `variants:` (the CLI's `--variant NAME`).
    """
    if variant is not None:
        if "stages" not in data:
            raise _fail(source, "variants", f"--variant {variant}: only a pipeline (a file with stages) has variants")
        data = apply_variant(data, variant, source)
    elif "stages" in data:
        data = {k: v for k, v in data.items() if k != "variants"}
    declared = data.get("vars") or {}
    if not isinstance(declared, dict):
        raise _fail(source, "vars", "must map names to values")
    unknown = set(variables or {}) - set(declared)
    if unknown:
        raise _fail(source, "vars", f"--var {sorted(unknown)[0]}: the file declares no such variable")
    # a variable's value may name labdeck's own places (`${labdeck.data}/...`); other references in
    # it (`${stages.build.outputs}/model`, `${matrix.AXIS}`) are resolved where the value lands
    merged = {k: _substitute_vars(v, None, f"{source}: vars.{k}") for k, v in {**declared, **(variables or {})}.items()}
    data = {k: (v if k == "vars" else _substitute_vars(v, merged, source)) for k, v in data.items()}
    if "stages" in data:
        return expand_pipeline(data, source)
    data.pop("vars", None)
    sweep = data.get("sweep")
    base = {k: v for k, v in data.items() if k != "sweep"}
    drafts = []
    for point in _sweep_points(sweep, source, "sweep"):
        job = copy.deepcopy(base)
        for key, value in point.items():
            _set_path(job, key, value, source, f"sweep.grid.{key}")
        if "name" in job and isinstance(job["name"], str):
            job["name"] = _point_name(job["name"], point)
        spec = validate_one(job, source, "")
        drafts.append(_draft(spec, _point_params(spec, point)))
    return Expansion(drafts, [d.kind for d in drafts])


def expand_file(path: Path | str, variables: dict[str, Any] | None = None, variant: str | None = None) -> Expansion:
    return expand(load_file(path), str(path), variables, variant)

