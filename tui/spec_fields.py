"""The New-job form's model, without Textual: fields of a spec class, text in and out, validation.

The form is generated from the pydantic spec classes in `engine.specs`: one editor per field, in
the class's order, grouped kind → model → dataset → parameters → resources → sweep; defaults and
help text come from the class (a docstring per field). Each field's place (`engine.specs.form`):
common or advanced (`form_order`), and the values of other fields it applies for (`applicable`: DPO's
beta only for method dpo); an expanded block (`lora`) is a switch plus one field per inner field
(`lora.r`). What the person typed is turned back into a spec mapping holding only what differs from
the defaults and only the fields that apply, and validated by
`client.Client.expand`, the same call `labdeck submit` makes, so a spec the form accepts is one
the CLI accepts, and the YAML preview is a file `labdeck submit` can read.
"""

from __future__ import annotations

import inspect
import json
import re
import shlex
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel

from engine.specs import SPEC_CLASSES, DatasetRef, JobSpecBase, ModelRef
from engine.specs.form import layout_of

OMIT = object()  # "leave this field out": its default applies

JOB_FIELDS = ("experiment", "name", "description")
RESOURCE_FIELDS = ("gpus", "min_free_mem_gb", "share_gpu_mem_gb", "allow_foreign", "priority", "time_limit",
                   "retry", "after", "seed", "slurm")
DATASET_FIELDS = ("dataset", "records")
SECTIONS = (("job", "Job"), ("model", "Model"), ("dataset", "Data"), ("parameters", "Parameters"),
            ("resources", "Resources and scheduling"), ("sweep", "Sweep (one job per grid point and seed)"))
SWEEP_GRID = "sweep_grid"
SWEEP_SEEDS = "sweep_seeds"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    section: str
    editor: str  # "select" | "bool" | "text"
    parse: str  # "str" | "number" | "argv" | "ids" | "ref" | "yaml" | "choice" | "bool" | "grid" | "seeds"
    choices: tuple[str, ...] = ()
    optional: bool = False
    required: bool = False
    default: Any = None
    description: str = ""
    common: bool = False  # at the top of the form; the rest is under "Advanced" (engine.specs.form)
    when: tuple[tuple[str, tuple[str, ...] | None], ...] = ()  # (other field, values it applies for; None: set)
    group: str = ""  # an expanded block (`lora`): its on/off switch and its fields `lora.r`, ... name it

    @property
    def wid(self) -> str:
        """The editor's widget id (`f-lora-r` for `lora.r`: ids take no dots)."""
        return "f-" + self.name.replace(".", "-")

    def default_text(self) -> str:
        return "required" if self.required else format_value(self, self.default)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            rest = tuple(a for a in args if a is not type(None))
            return (rest[0] if len(rest) == 1 else Union[rest]), True  # noqa: UP007
    return tp, False


def _mentions(tp: Any, cls: type) -> bool:
    if tp is cls:
        return True
    return any(_mentions(a, cls) for a in typing.get_args(tp))


def _jsonable(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def field_spec(name: str, info: Any, section: str | None = None) -> FieldSpec:
    tp, optional = _strip_optional(info.annotation)
    required = info.is_required()
    default = None if required else _jsonable(info.get_default(call_default_factory=True))
    description = (info.description or "").strip()
    if section is not None:
        pass
    elif name in JOB_FIELDS:
        section = "job"
    elif name in RESOURCE_FIELDS:
        section = "resources"
    elif name in DATASET_FIELDS or _mentions(tp, DatasetRef):
        section = "dataset"
    elif _mentions(tp, ModelRef):
        section = "model"
    else:
        section = "parameters"
    layout = layout_of(info)
    common = {"optional": optional, "required": required, "default": default, "description": description,
              "common": layout.common, "when": tuple(layout.when.items())}
    if layout.expand and isinstance(tp, type) and issubclass(tp, BaseModel):
        return FieldSpec(name, section, "bool", "present", **{**common, "default": False}, group=name)
    if typing.get_origin(tp) is Literal:
        return FieldSpec(name, section, "select", "choice", tuple(str(a) for a in typing.get_args(tp)), **common)
    if tp is bool:
        return FieldSpec(name, section, "bool", "bool", **common)
    if tp in (int, float):
        return FieldSpec(name, section, "text", "number", **common)
    if tp is str:
        return FieldSpec(name, section, "text", "str", **common)
    if tp in (ModelRef, DatasetRef) or (set(typing.get_args(tp)) == {str, list[str]}):
        return FieldSpec(name, section, "text", "ref", **common)
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if name == "command":
            return FieldSpec(name, section, "text", "argv", **common)
        if arg is int:
            return FieldSpec(name, section, "text", "ids", **common)
    return FieldSpec(name, section, "text", "yaml", **common)


def fields_for(kind: str) -> list[FieldSpec]:
    """Every field of `kind`'s spec class except `kind`, in section order, then class order."""
    cls = SPEC_CLASSES[kind]
    specs = []
    for n, info in cls.model_fields.items():
        if n == "kind":
            continue
        specs.append(f := field_spec(n, info))
        if f.parse == "present":  # an expanded block: its fields follow its switch, shown while it is on
            block = _strip_optional(info.annotation)[0]
            specs += [replace(field_spec(f"{n}.{sn}", si, f.section), common=f.common, when=((n, None),), group=n)
                      for sn, si in block.model_fields.items()]
    order = {s: i for i, (s, _) in enumerate(SECTIONS)}
    specs.sort(key=lambda f: order[f.section])  # stable: class order within a section
    return specs + [
        FieldSpec(SWEEP_GRID, "sweep", "text", "grid",
                  description="Fields to sweep: `learning_rate=1e-5,2e-5; lora.r=8,16` (or a YAML mapping). One job per combination."),
        FieldSpec(SWEEP_SEEDS, "sweep", "text", "seeds", description="Seeds to repeat every point with, e.g. `0, 1, 2`."),
    ]


def applicable(fields: list[FieldSpec], raw: dict[str, Any]) -> set[str]:
    """The names of the fields that apply, given the editors' contents: a field with `when` applies
    when every field it names applies and holds one of the listed values (or, for None, any value)."""
    by_name = {f.name: f for f in fields}
    memo: dict[str, bool] = {}

    def matches(name: str, values: tuple[str, ...] | None) -> bool:
        f = by_name[name]
        v = raw[name] if name in raw else format_value(f, None if f.required else f.default)
        if values is None:  # "set": a switch that is on, an editor that is not empty
            return v if isinstance(v, bool) else bool(str(v or "").strip())
        return (str(v).lower() if isinstance(v, bool) else str(v or "").strip()) in values

    def ok(name: str, depth: int = 0) -> bool:
        if name not in memo:
            f = by_name.get(name)
            memo[name] = f is not None and depth < 10 and all(
                other in by_name and ok(other, depth + 1) and matches(other, values) for other, values in f.when)
        return memo[name]

    return {f.name for f in fields if ok(f.name)}


def is_default(f: FieldSpec, raw: Any) -> bool:
    """True when the editor's content leaves the field at its default (so the spec omits it)."""
    try:
        return parse_value(f, raw) is OMIT
    except FieldError:
        return False


def form_order(kind: str, fields: list[FieldSpec]) -> tuple[list[FieldSpec], list[FieldSpec]]:
    """(common fields, advanced fields): the job's name and experiment first, then the kind's own
    common fields in class order (a fine-tune's method, model, data, learning rate, ...), then GPUs;
    advanced ones keep section order."""
    position = {n: i for i, n in enumerate(SPEC_CLASSES[kind].model_fields)}
    tail = {"resources": 1, "sweep": 3}  # an expanded block (LoRA) comes after GPUs: 2
    common = sorted((f for f in fields if f.common),
                    key=lambda f: (f.section != "job", 2 if f.group else tail.get(f.section, 0),
                                   position.get(f.group or f.name, 0)))
    return common, [f for f in fields if not f.common]


def kind_summary(kind: str) -> str:
    doc = inspect.getdoc(SPEC_CLASSES[kind]) or ""
    return doc.splitlines()[0] if doc else kind


# ----------------------------------------------------------------------------- text <-> values


def _scalar_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _flow(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10_000).strip()


def format_value(f: FieldSpec, value: Any) -> Any:
    """What the editor shows for `value`: text for inputs, the choice for selects, a bool."""
    value = _jsonable(value)
    if f.parse == "bool":
        return bool(value)
    if f.parse == "present":
        return value is not None and value is not False
    if f.parse == "choice":
        return "" if value is None else str(value)
    if value is None:
        return ""
    if f.parse in ("str", "number"):
        return _scalar_text(value)
    if f.parse == "argv":
        return shlex.join(value) if isinstance(value, list) else str(value)
    if f.parse == "ids":
        return ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    if f.parse == "ref":
        if isinstance(value, dict):
            ref_cls = DatasetRef if f.section == "dataset" else ModelRef
            defaults = {n: _jsonable(i.get_default(call_default_factory=True))
                        for n, i in ref_cls.model_fields.items() if not i.is_required()}
            shown = {k: v for k, v in value.items() if k == "path" or defaults.get(k, OMIT) != v}
            if set(shown) == {"path"} and isinstance(shown["path"], str):
                return shown["path"]
            return _flow(shown)
        if isinstance(value, list):
            return _flow(value)
        return str(value)
    if f.parse == "grid":
        if isinstance(value, dict):
            return "; ".join(f"{k}={','.join(_scalar_text(x) for x in v)}" for k, v in value.items())
        return str(value)
    if f.parse == "seeds":
        return ", ".join(str(s) for s in value) if isinstance(value, list) else str(value)
    if isinstance(value, (dict, list)):
        return _flow(value)
    return _scalar_text(value)


class FieldError(ValueError):
    """Text that cannot become a value for its field."""


def _number(raw: str) -> Any:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        return raw  # pydantic says why, in the same words as `labdeck submit`


def _yaml(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "malformed YAML"
        raise FieldError(f"not valid YAML: {first}") from None


def parse_grid(raw: str) -> dict[str, list[Any]]:
    raw = raw.strip()
    if raw.startswith("{"):
        data = _yaml(raw)
        if not isinstance(data, dict):
            raise FieldError("a sweep grid maps field names to lists of values")
        return {str(k): (v if isinstance(v, list) else [v]) for k, v in data.items()}
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in raw.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise FieldError(f"{part!r}: write field=value1,value2 (parts separated by ';')")
        items = values.strip()
        if items.startswith("["):
            parsed = _yaml(items)
            grid[key] = parsed if isinstance(parsed, list) else [parsed]
        else:
            grid[key] = [_number(v.strip()) if re.fullmatch(r"[-+0-9.eE]+", v.strip()) else v.strip()
                         for v in items.split(",") if v.strip()]
    return grid


def parse_value(f: FieldSpec, raw: Any) -> Any:
    """The value for `f` from its editor's content, or OMIT; raises FieldError."""
    if f.parse == "present":
        return True if raw else OMIT
    if f.parse == "bool":
        value: Any = bool(raw)
    elif f.parse == "choice":
        value = None if raw in ("", None) else str(raw)
        if value is None and not f.optional:
            return OMIT
    else:
        text = "" if raw is None else str(raw).strip()
        if not text:
            if f.parse in ("grid", "seeds"):
                return OMIT
            return None if (f.optional and f.default is not None) else OMIT
        if f.parse == "str":
            value = text
        elif f.parse == "number":
            value = _number(text)
        elif f.parse == "argv":
            try:
                value = shlex.split(text)
            except ValueError as e:
                raise FieldError(f"cannot split into arguments: {e}") from None
        elif f.parse == "ids":
            try:
                value = [int(x) for x in re.split(r"[,\s]+", text) if x]
            except ValueError:
                raise FieldError("job ids are whole numbers, separated by commas") from None
        elif f.parse == "ref":
            value = _yaml(text) if text[:1] in "{[" else text
        elif f.parse == "grid":
            value = parse_grid(text)
        elif f.parse == "seeds":
            try:
                value = [int(x) for x in re.split(r"[,\s]+", text.strip("[]")) if x]
            except ValueError:
                raise FieldError("seeds are whole numbers, separated by commas") from None
        else:
            value = _yaml(text)
    if f.parse not in ("grid", "seeds") and not f.required and value == f.default:
        return OMIT
    return value


def collect(kind: str, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(spec mapping, {field: error}) from the editors' contents (`raw`: field name -> content)."""
    data: dict[str, Any] = {"kind": kind}
    errors: dict[str, str] = {}
    sweep: dict[str, Any] = {}
    fields = fields_for(kind)
    applies = applicable(fields, raw)
    for f in fields:
        if f.name not in raw or f.name not in applies:
            continue  # a field the chosen method does not use keeps its editor's text but stays out
        try:
            value = parse_value(f, raw[f.name])
        except FieldError as e:
            errors[f.name] = str(e)
            continue
        if value is OMIT:
            continue
        if f.name == SWEEP_GRID:
            sweep["grid"] = value
        elif f.name == SWEEP_SEEDS:
            sweep["seeds"] = value
        elif f.parse == "present":
            data[f.name] = {}  # its fields that differ from their defaults follow
        elif f.group:
            data.setdefault(f.group, {})[f.name.split(".", 1)[1]] = value
        else:
            data[f.name] = value
    if sweep:
        data["sweep"] = sweep
    return data, errors


def editor_values(kind: str, spec: dict[str, Any] | None) -> dict[str, Any]:
    """What each editor starts with: the spec's values (a past job, a preset) over the defaults."""
    spec = spec or {}
    out: dict[str, Any] = {}
    for f in fields_for(kind):
        if f.name == SWEEP_GRID:
            out[f.name] = format_value(f, (spec.get("sweep") or {}).get("grid"))
        elif f.name == SWEEP_SEEDS:
            out[f.name] = format_value(f, (spec.get("sweep") or {}).get("seeds"))
        elif f.group and f.group != f.name:
            block, sub = spec.get(f.group), f.name.split(".", 1)[1]
            out[f.name] = format_value(f, block[sub] if isinstance(block, dict) and sub in block else f.default)
        elif f.name in spec:
            out[f.name] = format_value(f, spec[f.name])
        else:
            out[f.name] = format_value(f, None if f.required else f.default)
    return out


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Validation:
    data: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)  # field -> message
    names: tuple[str, ...] = ()  # the jobs it would queue
    yaml_text: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def to_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def validate(kind: str, raw: dict[str, Any]) -> Validation:
    """Collect and validate through the client layer (`Client.expand`, what a submit runs); errors
    keyed by the field they name."""
    from client import Client, ClientError

    data, errors = collect(kind, raw)
    text = to_yaml(data)
    if errors:
        return Validation(data, errors, (), text)
    try:
        (exp,) = Client.expand(data=json.loads(json.dumps(data)), source="form")
    except ClientError as e:
        names = {f.name for f in fields_for(kind)}
        where, msg = _split_error(str(e), names)
        return Validation(data, {where: msg, **_all_field_errors(data, names)}, (), text)
    return Validation(data, {}, tuple(d.name for d in exp.drafts), text)


def _all_field_errors(data: dict[str, Any], names: set[str]) -> dict[str, str]:
    """Every invalid field at once (a spec file's error names only the first), for marking the form."""
    from pydantic import ValidationError

    from engine.specs import parse_spec

    body = {k: v for k, v in data.items() if k != "sweep"}
    try:
        parse_spec(body)
    except ValidationError as e:
        out: dict[str, str] = {}
        for err in e.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and (p[:1].isupper() or "[" in p))]
            if loc and loc[0] == data.get("kind"):
                loc = loc[1:]
            if not loc:
                continue
            field_name = ".".join(map(str, loc[:2])) if ".".join(map(str, loc[:2])) in names else str(loc[0])
            msg = {"missing": "required field is missing", "extra_forbidden": "unknown field"}.get(
                err["type"], err["msg"].removeprefix("Value error, "))
            out.setdefault(field_name, f"{'.'.join(map(str, loc))}: {msg}")
        return out
    return {}


def _split_error(message: str, names: Collection[str] = ()) -> tuple[str, str]:
    """'form: learning_rate: must be > 0' -> ('learning_rate', 'learning_rate: must be > 0'); an expanded
    block's field keeps its two parts ('lora.r')."""
    rest = message.removeprefix("form: ")
    loc, sep, msg = rest.partition(": ")
    if not sep:
        return "", rest
    head = loc.split(".")[0].split("[")[0]
    if ".".join(loc.split(".")[:2]) in names:
        head = ".".join(loc.split(".")[:2])
    if head == "sweep":
        head = SWEEP_SEEDS if loc.startswith("sweep.seeds") else SWEEP_GRID
    return head, f"{loc}: {msg}"


__all__ = ["OMIT", "SECTIONS", "FieldError", "FieldSpec", "JobSpecBase", "Validation", "applicable", "collect",
           "editor_values", "fields_for", "form_order", "format_value", "is_default", "kind_summary", "parse_grid",
           "parse_value", "to_yaml", "validate"]
