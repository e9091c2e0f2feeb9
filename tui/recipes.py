"""A recipe or spec file as the `n` menu offers it: its variables with their help, and a preview.

No Textual here (tested directly). A recipe's `vars:` carry their meaning as YAML comments
(`beta: 1.0   # CAR's beta ...`); those comments become the form's help. A value is checked the
way a user would: an existing local path is fine, a hub id (`org/name`) will download, a path
that looks like a file but is not there is refused. The preview expands the file exactly as
`labdeck submit FILE --var ... --variant ...` would and says what it would queue: stages, job
count, GPUs each stage's jobs ask for, and the hub ids it would download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FILE_LIKE = re.compile(r"\.(jsonl|json|yaml|yml|csv|parquet|txt|safetensors|bin)$")
_VAR_LINE = re.compile(r"^(\s+)([A-Za-z_][\w-]*):(.*)$")
MODEL_KEYS = ("model", "path", "dataset", "records", "base", "sft", "aligned", "reward_model", "tokenizer")


@dataclass(frozen=True)
class VarField:
    name: str
    value: str  # as the form shows it (the file's value, or its variant's)
    help: str


@dataclass(frozen=True)
class Preview:
    jobs: int
    stages: list[tuple[str, int, int]]  # (stage, jobs, GPUs each job asks for, the most in the stage)
    downloads: list[str]
    experiment: str
    error: str | None = None
    names: list[str] = field(default_factory=list)


def _comments(text: str) -> dict[str, str]:
    """{var name: its comment} from every `vars:` block of a YAML file (top level first)."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    block_indent: int | None = None
    pending: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.endswith("vars:") and not stripped.startswith("#"):
            block_indent = len(line) - len(line.lstrip())
            pending = []
            continue
        if block_indent is None:
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        if not stripped:
            continue
        if indent <= block_indent:
            block_indent = None
            continue
        m = _VAR_LINE.match(line)
        if m:
            name, rest = m.group(2), m.group(3)
            comment = rest.split(" #", 1)[1].strip() if " #" in rest else " ".join(pending)
            if name not in out and comment:
                out[name] = comment
        pending = []
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def recipe_vars(path: Path, variant: str | None = None) -> list[VarField]:
    """The variables a file declares (after its variant, if one is chosen), with their help."""
    from engine.specfile import apply_variant, load_file

    text = path.read_text(encoding="utf-8")
    data = load_file(path)
    if variant:
        data = apply_variant(data, variant, str(path))
    declared = data.get("vars") or {}
    helps = _comments(text)
    return [VarField(k, _text(v), helps.get(k, "")) for k, v in declared.items()] if isinstance(declared, dict) else []


def check_value(value: str) -> tuple[bool, str]:
    """(ok, note) for a variable's value: an existing path, a hub id, a missing file, or plain text."""
    v = value.strip()
    if not v or "${" in v:
        return True, ""
    p = Path(v).expanduser()
    if p.exists():
        return True, "local path"
    if v.startswith(("/", "./", "../", "~")) or (FILE_LIKE.search(v) and not HUB_ID.match(v)):
        return False, f"{v}: no such file or folder"
    if HUB_ID.match(v) and not FILE_LIKE.search(v):
        return True, "hub id: downloads on the box"
    if FILE_LIKE.search(v):
        return False, f"{v}: no such file"
    return True, ""


def _hub_ids(spec: Any, key: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(spec, dict):
        for k, v in spec.items():
            out += _hub_ids(v, k)
    elif isinstance(spec, list):
        for v in spec:
            out += _hub_ids(v, key)
    elif isinstance(spec, str) and key in MODEL_KEYS and HUB_ID.match(spec) and not Path(spec).exists():
        out.append(spec)
    return out


def preview(path: Path, variables: dict[str, str], variant: str | None = None) -> Preview:
    """What `labdeck submit PATH --var ... --variant ...` would queue; `error` says why not."""
    from engine.specfile import SpecError, expand_file

    try:
        exp = expand_file(path, variables or None, variant)
    except (SpecError, OSError) as e:
        return Preview(0, [], [], "", error=str(e))
    stages: dict[str, list[int]] = {}
    downloads: list[str] = []
    for d in exp.drafts:
        stage = str(d.params.get("stage", d.name))
        stages.setdefault(stage, []).append(d.gpus_requested)
        for h in _hub_ids(d.spec):
            if h not in downloads:
                downloads.append(h)
    rows = [(s, len(g), max(g)) for s, g in stages.items()]
    exp_name = exp.drafts[0].experiment if exp.drafts else ""
    return Preview(len(exp.drafts), rows, downloads, exp_name, names=[d.name for d in exp.drafts])


def recipe_menu() -> list[tuple[str, str, str | None, str]]:
    """(option id, recipe name, variant or None, description) for every shipped recipe and variant."""
    from engine.recipes import list_recipes

    out: list[tuple[str, str, str | None, str]] = []
    for r in list_recipes():
        out.append((f"recipe:{r.name}:", r.name, None, r.description))
        for v, text in r.variants.items():
            out.append((f"recipe:{r.name}:{v}", r.name, v, text))
    return out
