"""Pipelines: spec files with `stages:`, `matrix:` axes, `defaults:` and named `variants:`.

A stage may `foreach` over matrix axes, refer to an earlier stage's result as
`${stages.NAME.output}` (which also makes it depend on that stage), list `needs: [NAME]`, carry its
own `sweep`, and name fixed `params` recorded with its jobs for the results pivot. Where both
stages run over the same axes, each job is matched with the upstream job of the same axis values;
otherwise it gets every upstream job (the reference becomes a list). The single-job parts
(validation, sweeps, drafts) come from `engine.specjobs`.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Any

from db.queue import JobDraft
from engine.specjobs import (
    REF_RE,
    STAGE_ATTRS,
    Expansion,
    _draft,
    _fail,
    _label,
    _point_name,
    _point_params,
    _set_path,
    _sweep_points,
    _walk,
    validate_one,
)

PIPELINE_KEYS = {"experiment", "description", "vars", "matrix", "defaults", "stages", "variants"}
VARIANT_KEYS = {"description", "experiment", "vars", "matrix", "defaults", "stages", "add_stages"}
STAGE_KEYS = {"foreach", "needs", "sweep", "params"}


@dataclass
class _StageJob:
    index: int  # position in the drafts list
    axes: dict[str, int]  # matrix axis -> value index


def _merge(base: Any, over: Any) -> Any:
    """Overlay `over` on `base`: mappings merge key by key, a None value removes the key, the rest replaces."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return copy.deepcopy(over)
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(base.get(k), v)
    return out


def apply_variant(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    """The pipeline with its variant `name` laid over it (e.g. a recipe's scaled-down `tiny` run).

    A variant keeps the recipe's stages and their wiring and changes only what it names: `vars`
    (declared ones only), whole `matrix` axes, `defaults`, fields of existing `stages` by name
    (merged as `_merge` does), an `experiment` name, and `add_stages` placed before the recipe's
    stages (to build local models, say). One pipeline file thus holds both the paper-scale run and
    the run a laptop or CI can afford, and they cannot drift apart.
    """
    variants = data.get("variants") or {}
    if not isinstance(variants, dict) or name not in variants:
        known = ", ".join(sorted(variants)) if isinstance(variants, dict) and variants else "none"
        raise _fail(source, "variants", f"no variant named {name!r} (known: {known})")
    over = variants[name]
    where = f"variants.{name}"
    if not isinstance(over, dict):
        raise _fail(source, where, "must be a mapping (vars, matrix, defaults, stages, add_stages, experiment)")
    unknown = set(over) - VARIANT_KEYS
    if unknown:
        raise _fail(source, f"{where}.{sorted(unknown)[0]}", f"unknown field (use {', '.join(sorted(VARIANT_KEYS))})")
    out = {k: copy.deepcopy(v) for k, v in data.items() if k != "variants"}
    for key in ("vars", "matrix", "defaults", "stages"):
        if key in over and not isinstance(over[key], dict):
            raise _fail(source, f"{where}.{key}", "must be a mapping")
    declared = out.get("vars") or {}
    for var in over.get("vars") or {}:
        if var not in declared:
            raise _fail(source, f"{where}.vars.{var}", "the pipeline declares no such variable")
    out["vars"] = {**declared, **(over.get("vars") or {})}
    if "experiment" in over:
        out["experiment"] = over["experiment"]
    if over.get("matrix"):
        out["matrix"] = {**(out.get("matrix") or {}), **over["matrix"]}
    if over.get("defaults"):
        out["defaults"] = _merge(out.get("defaults") or {}, over["defaults"])
    stages = out.get("stages")
    if not isinstance(stages, list):
        raise _fail(source, "stages", "must be a non-empty list of jobs")
    by_name = {s.get("name"): i for i, s in enumerate(stages) if isinstance(s, dict)}
    for stage_name, fields in (over.get("stages") or {}).items():
        if stage_name not in by_name:
            raise _fail(source, f"{where}.stages.{stage_name}", "the pipeline has no stage of that name")
        if not isinstance(fields, dict):
            raise _fail(source, f"{where}.stages.{stage_name}", "must be a mapping of fields")
        if "name" in fields:
            raise _fail(source, f"{where}.stages.{stage_name}.name", "a variant cannot rename a stage")
        stages[by_name[stage_name]] = _merge(stages[by_name[stage_name]], fields)
    added = over.get("add_stages") or []
    if not isinstance(added, list):
        raise _fail(source, f"{where}.add_stages", "must be a list of stages")
    out["stages"] = copy.deepcopy(added) + stages
    return out


def expand_pipeline(data: dict[str, Any], source: str) -> Expansion:
    unknown = set(data) - PIPELINE_KEYS
    if unknown:
        raise _fail(source, sorted(unknown)[0], "unknown top-level field in a pipeline (use experiment, description, vars, matrix, defaults, variants, stages)")
    experiment = data.get("experiment")
    if not isinstance(experiment, str) or not experiment:
        raise _fail(source, "experiment", "a pipeline needs an experiment name")
    matrix = data.get("matrix") or {}
    if not isinstance(matrix, dict) or not all(isinstance(v, list) and v for v in matrix.values()):
        raise _fail(source, "matrix", "must map axis names to non-empty lists")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise _fail(source, "defaults", "must be a mapping of fields")
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise _fail(source, "stages", "must be a non-empty list of jobs")

    drafts: list[JobDraft] = []
    kinds: list[str] = []
    jobs_of: dict[str, list[_StageJob]] = {}
    for si, stage in enumerate(stages):
        where = f"stages[{si}]"
        if not isinstance(stage, dict):
            raise _fail(source, where, "each stage is a mapping of fields")
        name = stage.get("name")
        if not isinstance(name, str) or not name:
            raise _fail(source, f"{where}.name", "every stage needs a name")
        if name in jobs_of:
            raise _fail(source, f"{where}.name", f"stage {name!r} is defined twice")
        foreach = stage.get("foreach") or []
        if isinstance(foreach, str):
            foreach = [foreach]
        for axis in foreach:
            if axis not in matrix:
                raise _fail(source, f"{where}.foreach", f"no matrix axis named {axis!r}")
        needs = stage.get("needs") or []
        if isinstance(needs, str):
            needs = [needs]
        for need in needs:
            if need not in jobs_of:
                raise _fail(source, f"{where}.needs", f"no earlier stage named {need!r}")
        extra = stage.get("params") or {}
        if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float, bool))
                                                  for k, v in extra.items()):
            raise _fail(source, f"{where}.params", "must map names to plain values (recorded for the results pivot)")
        if "stage" in extra or set(extra) & set(foreach):
            raise _fail(source, f"{where}.params", "cannot redefine 'stage' or an axis the stage runs over")
        body = {**copy.deepcopy(defaults), **{k: v for k, v in stage.items() if k not in STAGE_KEYS}}
        body["experiment"] = experiment
        jobs_of[name] = []
        for combo in itertools.product(*(range(len(matrix[a])) for a in foreach)):
            axes = dict(zip(foreach, combo, strict=True))
            values = {a: matrix[a][i] for a, i in axes.items()}
            for point in _sweep_points(stage.get("sweep"), source, f"{where}.sweep"):
                job = _substitute_matrix(copy.deepcopy(body), values, source, where)
                for key, value in point.items():
                    _set_path(job, key, value, source, f"{where}.sweep.grid.{key}")
                label = {a: _label(v) for a, v in values.items()}
                job["name"] = _point_name(name, label | point)
                deps: set[int] = set()
                job = _substitute_stage_refs(job, axes, jobs_of, deps, source, where)
                for need in needs:
                    deps.update(_matching(jobs_of[need], axes))
                spec = validate_one(job, source, where)
                index = len(drafts)
                params = {"stage": name, **extra, **label, **_point_params(spec, point)}
                drafts.append(_draft(spec, params, tuple(sorted(deps))))
                kinds.append(spec["kind"])
                jobs_of[name].append(_StageJob(index, axes))
    return Expansion(drafts, kinds)


def _substitute_matrix(job: Any, values: dict[str, Any], source: str, where: str) -> Any:
    def lookup(ref: str) -> Any:
        parts = ref.split(".")
        if parts[0] != "matrix":
            return None
        if len(parts) < 2 or parts[1] not in values:
            raise _fail(source, where, f"${{{ref}}}: the stage does not run `foreach` over axis {parts[1] if len(parts) > 1 else ''!r}")
        value = values[parts[1]]
        for p in parts[2:]:
            if not isinstance(value, dict) or p not in value:
                raise _fail(source, where, f"${{{ref}}}: matrix value has no field {p!r}")
            value = value[p]
        return value

    def fn(s: str) -> Any:
        whole = REF_RE.fullmatch(s)
        if whole and whole.group(1).startswith("matrix."):
            return lookup(whole.group(1))
        return REF_RE.sub(lambda m: _label(lookup(m.group(1))) if m.group(1).startswith("matrix.") else m.group(0), s)

    return _walk(job, fn)


def _matching(upstream: list[_StageJob], axes: dict[str, int]) -> list[int]:
    return [j.index for j in upstream if all(axes.get(a, i) == i for a, i in j.axes.items() if a in axes)]


def _substitute_stage_refs(
    job: Any, axes: dict[str, int], jobs_of: dict[str, list[_StageJob]], deps: set[int], source: str, where: str
) -> Any:
    def targets(ref: str) -> tuple[list[int], str] | None:
        parts = ref.split(".")
        if parts[0] != "stages":
            return None
        if len(parts) != 3 or parts[2] not in STAGE_ATTRS:
            raise _fail(source, where, f"${{{ref}}}: write ${{stages.NAME.output}} (or .outputs, .run_dir)")
        if parts[1] not in jobs_of:
            raise _fail(source, where, f"${{{ref}}}: refers to stage {parts[1]!r}, which is not an earlier stage")
        found = _matching(jobs_of[parts[1]], axes)
        deps.update(found)
        return found, parts[2]

    def fn(s: str) -> Any:
        whole = REF_RE.fullmatch(s)
        if whole:
            t = targets(whole.group(1))
            if t is not None:
                idx, attr = t
                markers = [f"${{@{i}.{attr}}}" for i in idx]
                return markers[0] if len(markers) == 1 else markers

        def inline(m: re.Match[str]) -> str:
            t = targets(m.group(1))
            if t is None:
                raise _fail(source, where, f"${{{m.group(1)}}}: unknown reference (use ${{matrix.AXIS}} or ${{stages.NAME.output}})")
            idx, attr = t
            if len(idx) != 1:
                raise _fail(source, where, f"${{{m.group(1)}}}: names {len(idx)} jobs; a reference inside text needs exactly one")
            return f"${{@{idx[0]}.{attr}}}"

        return REF_RE.sub(inline, s)

    return _walk(job, fn)


