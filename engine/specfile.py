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
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from db import stagerefs
from db.queue import JobDraft
from engine.specs import KINDS, dump_spec, parse_spec

REF_RE = re.compile(r"\$\{([^}]*)\}")
INTERNAL_RE = re.compile(r"\$\{@(\d+)\.(output|outputs|run_dir)\}")
STAGE_ATTRS = ("output", "outputs", "run_dir")
PIPELINE_KEYS = {"experiment", "description", "vars", "matrix", "defaults", "stages", "variants"}
VARIANT_KEYS = {"description", "experiment", "vars", "matrix", "defaults", "stages", "add_stages"}
STAGE_KEYS = {"foreach", "needs", "sweep", "params"}


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}  # pydantic's names for union members


class SpecError(ValueError):
    """A spec file that cannot become jobs; the message is one line naming file, field and why."""


def _fail(source: str, where: str, why: str) -> SpecError:
    return SpecError(f"{source}: {where}: {why}" if where else f"{source}: {why}")


# ----------------------------------------------------------------------------- reading


def load_file(path: Path | str) -> dict[str, Any]:
    """Read a YAML or JSON spec file into a mapping, with one-line errors."""
    p = Path(path)
    source = str(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise _fail(source, "", "no such file") from None
    except IsADirectoryError:
        raise _fail(source, "", "is a folder, not a spec file") from None
    except OSError as e:
        raise _fail(source, "", e.strerror or str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(source, "", f"not UTF-8 text (byte {e.start})") from None
    return load_text(text, source, json_only=p.suffix.lower() == ".json")


def load_text(text: str, source: str = "<spec>", json_only: bool = False) -> dict[str, Any]:
    try:
        data = json.loads(text) if json_only else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise _fail(source, f"line {e.lineno}", f"malformed JSON: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _fail(source, where, f"malformed YAML: {problem}") from None
    if not isinstance(data, dict):
        raise _fail(source, "", "a spec file must be a mapping of fields (kind, experiment, name, ...)")
    return data


# ----------------------------------------------------------------------------- validation


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part)
            if not text.isprintable():  # a key such as '\n' from a malformed file: keep the message one line
                text = repr(text)
            out += ("." if out else "") + text
    return out


def validate_one(data: dict[str, Any], source: str, where: str = "") -> dict[str, Any]:
    """Validate one job's fields; return the normalised JSON form or raise SpecError."""
    kind = data.get("kind")
    prefix = f"{where}." if where else ""
    if kind is None:
        raise _fail(source, f"{prefix}kind", f"missing; one of {', '.join(KINDS)}")
    if kind not in KINDS:
        raise _fail(source, f"{prefix}kind", f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    try:
        spec = parse_spec(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        if loc and loc[0] == kind:  # the discriminated union puts the tag first
            loc = loc[1:]
        # pydantic names nested union members by their class; drop those parts
        loc = tuple(p for p in loc if not (isinstance(p, str) and (p[:1].isupper() or "[" in p or p in _TYPE_TAGS)))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        msg = msg.removeprefix("Value error, ")
        raise _fail(source, prefix + _loc(loc), msg) from None
    return dump_spec(spec)


def _set_path(data: dict[str, Any], dotted: str, value: Any, source: str, where: str) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise _fail(source, where, f"{dotted!r}: {part!r} is not a nested mapping")
        node = nxt
    node[parts[-1]] = value


def _label(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name", json.dumps(value, sort_keys=True)))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _sweep_points(sweep: Any, source: str, where: str) -> list[dict[str, Any]]:
    """[{field: value, ..., 'seed': s}] for every grid point and seed, in a stable order."""
    if sweep is None:
        return [{}]
    if not isinstance(sweep, dict) or set(sweep) - {"grid", "seeds"}:
        raise _fail(source, where, "a sweep is {grid: {field: [values]}, seeds: [..]}")
    grid = sweep.get("grid") or {}
    seeds = sweep.get("seeds")
    if not isinstance(grid, dict):
        raise _fail(source, f"{where}.grid", "must map field names to lists of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise _fail(source, f"{where}.grid.{key}", "must be a non-empty list of values")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds)):
        raise _fail(source, f"{where}.seeds", "must be a non-empty list of integers")
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        base = dict(zip(keys, combo, strict=True))
        for seed in seeds or [None]:
            points.append(base if seed is None else {**base, "seed": seed})
    return points


def _get_path(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _point_params(spec: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """A sweep point's values as validated (YAML reads `1e-5` as text; the spec made it a float)."""
    out = {}
    for key, raw in point.items():
        value = _get_path(spec, key)
        out[key] = _label(value) if isinstance(value, dict) else (raw if value is None else value)
    return out


def _point_name(name: str, point: dict[str, Any]) -> str:
    if not point:
        return name
    return f"{name}[{','.join(f'{k}={_label(v)}' for k, v in point.items())}]"


# ----------------------------------------------------------------------------- expansion


@dataclass
class _StageJob:
    index: int  # position in the drafts list
    axes: dict[str, int]  # matrix axis -> value index


@dataclass
class Expansion:
    """What a spec file becomes: drafts in dependency order, and how to fill in stage references."""

    drafts: list[JobDraft]
    kinds: list[str] = field(default_factory=list)

    def resolver(self, home: Path | None = None) -> Callable[[int, dict[str, Any], list[int]], dict[str, Any]]:
        """For `db.queue.enqueue`: turn `${@i.output}` batch markers into stage references by job
        id (`${job:ID.output}`), once the ids are known. They stay symbolic in the store and become
        paths when the worker prepares the job's run folder (`db.stagerefs`); `home` is unused and
        kept for callers that pass it."""

        def resolve(_index: int, spec: dict[str, Any], ids: list[int]) -> dict[str, Any]:
            text = json.dumps(spec)
            if "${@" not in text:
                return spec
            return _walk(spec, lambda s: INTERNAL_RE.sub(lambda m: stagerefs.marker(ids[int(m.group(1))], m.group(2)), s))

        return resolve


def _walk(value: Any, fn: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        out: list[Any] = []
        for v in value:
            r = _walk(v, fn)
            # a reference inside a list that stands for several jobs is spliced in, not nested
            if isinstance(v, str) and isinstance(r, list):
                out.extend(r)
            else:
                out.append(r)
        return out
    if isinstance(value, dict):
        return {k: _walk(v, fn) for k, v in value.items()}
    return value


def _draft(spec: dict[str, Any], params: dict[str, Any], deps: tuple[int, ...] = ()) -> JobDraft:
    retry = spec.get("retry") or {}
    gb = 1024
    share = spec.get("share_gpu_mem_gb")
    return JobDraft(
        experiment=spec["experiment"],
        name=spec["name"],
        kind=spec["kind"],
        spec=spec,
        params=params,
        priority=spec.get("priority", 0),
        gpus_requested=spec.get("gpus", 0),
        min_free_mem_mb=int(spec.get("min_free_mem_gb", 0) * gb),
        gpu_mem_mb=int(share * gb) if share else 0,
        allow_foreign=spec.get("allow_foreign", False),
        time_limit_s=spec.get("time_limit"),
        retry_max=retry.get("max", 0),
        retry_on=tuple(retry.get("on", ())),
        depends_on=deps,
        depends_on_ids=tuple(spec.get("after", ())),
    )


def builtin_vars() -> dict[str, Any]:
    """`${labdeck.python}` (this interpreter) and `${labdeck.data}` (the data shipped with labdeck)."""
    import sys

    return {"python": sys.executable, "data": str(Path(__file__).parent / "data")}


def _substitute_vars(data: Any, variables: dict[str, Any] | None, source: str) -> Any:
    """Replace `${vars.NAME}` and `${labdeck.NAME}` everywhere; a whole-string reference keeps the value's type.

    With `variables` None only `${labdeck.NAME}` is replaced, and `${vars.NAME}` is refused: that is how
    variable values themselves are read (`instructions: ${labdeck.data}/demo_train.jsonl`).
    """
    scopes: dict[str, dict[str, Any]] = {"labdeck": builtin_vars()}
    if variables is not None:
        scopes["vars"] = variables

    def lookup(ref: str) -> tuple[bool, Any]:
        scope, _, name = ref.partition(".")
        if scope == "vars" and variables is None:
            raise _fail(source, f"${{{ref}}}", "a variable's value cannot refer to another variable")
        if scope not in scopes:
            return False, None
        if name not in scopes[scope]:
            raise _fail(source, f"${{{ref}}}", f"no such variable (known: {', '.join(sorted(scopes[scope])) or 'none'})")
        return True, scopes[scope][name]

    def fn(s: str) -> Any:
        whole = REF_RE.fullmatch(s)
        if whole:
            found, value = lookup(whole.group(1))
            if found:
                return value

        def inline(m: re.Match[str]) -> str:
            found, value = lookup(m.group(1))
            return _label(value) if found else m.group(0)

        return REF_RE.sub(inline, s)

    return _walk(data, fn)


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
        return _expand_pipeline(data, source)
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


def _expand_pipeline(data: dict[str, Any], source: str) -> Expansion:
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


def expand_file(path: Path | str, variables: dict[str, Any] | None = None, variant: str | None = None) -> Expansion:
    return expand(load_file(path), str(path), variables, variant)

