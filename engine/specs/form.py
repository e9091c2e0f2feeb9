"""How the app's New-job form lays out a spec class: which fields come first, which apply when.

The layout sits beside each field (pydantic's `json_schema_extra`, under the key `x-form`), so a
new field is placed where its author put it, and `labdeck spec KIND --json` shows it too:

- `common`: shown at the top of the form (model, data, learning rate, GPUs, ...); every other
  field goes under the form's folded "Advanced" part.
- `when`: the field applies only when other fields have certain values, e.g. DPO's beta when
  `method` is `dpo`; `None` instead of a list of values means "whenever that field is set". A
  field that does not apply is hidden and left out of the spec the form builds.
- `expand`: an optional block of its own fields (LoRA's r, alpha, ...) becomes an on/off switch
  with one editor per inner field, shown while it is on, instead of one line of YAML.

A field without `x-form` is an advanced field that always applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

FORM_KEY = "x-form"


def form(*, common: bool = False, when: dict[str, Sequence[str] | None] | None = None,
         expand: bool = False) -> dict[str, Any]:
    """The `json_schema_extra` of a field: its place in the New-job form."""
    meta: dict[str, Any] = {}
    if common:
        meta["common"] = True
    if expand:
        meta["expand"] = True
    if when:
        meta["when"] = {k: (None if v is None else [str(x) for x in v]) for k, v in when.items()}
    return {FORM_KEY: meta}


@dataclass(frozen=True)
class FieldLayout:
    common: bool = False
    when: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    expand: bool = False


def layout_of(info: Any) -> FieldLayout:
    """A pydantic FieldInfo's layout (advanced and unconditional unless it says otherwise)."""
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    meta = extra.get(FORM_KEY) or {}
    when = {str(k): (None if v is None else tuple(str(x) for x in v)) for k, v in (meta.get("when") or {}).items()}
    return FieldLayout(bool(meta.get("common")), when, bool(meta.get("expand")))


__all__ = ["FORM_KEY", "FieldLayout", "form", "layout_of"]
