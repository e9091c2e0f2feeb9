"""Spec files, the parts every shape shares: loading, validating one job, sweeps, variables, drafts.

`engine.specfile` is the front door (`expand`, `expand_file`); this module turns a single job or a
sweep into validated `JobDraft`s, and `engine.pipeline` builds on it for files with `stages:`.
Every refusal is a `SpecError` with one line naming the file, the field and why.
"""

from __future__ import annotations

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


