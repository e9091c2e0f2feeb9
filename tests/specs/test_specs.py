"""Typed specs: valid specs round-trip through YAML; invalid input only ever raises a validation error."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.specfile import SpecError, expand, validate_one
from engine.specs import KINDS, SPEC_CLASSES, dump_spec, parse_spec
from engine.specs.command import RESERVED_ENV

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
model_ref = st.one_of(NAMES, st.fixed_dictionaries({"path": NAMES}, optional={"revision": NAMES, "dtype": st.sampled_from(["auto", "float32", "bfloat16"])}))
common = {
    "experiment": NAMES,
    "name": NAMES,
}
optional_common = {
    "gpus": st.integers(0, 8),
    "priority": st.integers(-1000, 1000),
    "seed": st.integers(0, 2**31),
    "time_limit": st.one_of(st.none(), st.integers(1, 10**6), st.sampled_from(["90s", "15m", "2h", "1d"])),
    "min_free_mem_gb": st.floats(0, 80),
    "description": TEXT,
}

# What a valid env may hold: no NUL in a value, and none of the variables labdeck sets itself.
ENV_NAMES = NAMES.filter(lambda n: n not in RESERVED_ENV and not n.startswith("LABDECK_"))

SPECS = {
    "command": st.fixed_dictionaries(
        {**common, "kind": st.just("command"), "command": st.lists(TEXT.filter(lambda s: "\x00" not in s), min_size=1, max_size=4).filter(lambda c: c[0].strip() != "")},
        optional={**optional_common, "env": st.dictionaries(ENV_NAMES, TEXT.filter(lambda s: "\x00" not in s), max_size=3)},
    ),
    "generate": st.fixed_dictionaries(
        {**common, "kind": st.just("generate"), "model": model_ref, "dataset": NAMES},
        optional={**optional_common, "max_new_tokens": st.integers(1, 4096), "top_p": st.floats(0.01, 1.0),
                  "batch_size": st.integers(1, 64), "template": st.sampled_from(["chat", "struq", "raw"])},
    ),
    "score": st.fixed_dictionaries(
        {**common, "kind": st.just("score"), "records": NAMES,
         "scorers": st.lists(st.sampled_from([{"type": "length"}, {"type": "injection"}, {"type": "reward", "model": "rm"}]), min_size=1, max_size=3)},
        optional={**optional_common, "car_beta": st.one_of(st.none(), st.floats(0, 10))},
    ),
    "finetune": st.fixed_dictionaries(
        {**common, "kind": st.just("finetune"), "model": model_ref, "dataset": NAMES},
        optional={**optional_common, "learning_rate": st.floats(1e-7, 1e-2), "epochs": st.floats(0.1, 10),
                  "per_device_batch": st.integers(1, 64), "lora": st.fixed_dictionaries({"r": st.integers(1, 64)})},
    ),
    "merge": st.fixed_dictionaries(
        {**common, "kind": st.just("merge"), "method": st.just("expo"), "sft": st.just("org/sft-model"), "aligned": st.just("org/aligned-model")},
        optional={**optional_common, "alpha": st.floats(-1.0, 1000.0)},
    ),
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_docs_for_every_field(kind: str) -> None:
    for name, f in SPEC_CLASSES[kind].model_fields.items():
        if name != "kind":  # the discriminator; the class docstring documents it
            assert f.description, f"{kind}.{name} has no docstring"


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(data=st.data())
def test_valid_spec_round_trips_through_yaml(kind: str, data: st.DataObject) -> None:
    raw = data.draw(SPECS[kind])
    spec = parse_spec(raw)
    dumped = dump_spec(spec)
    again = parse_spec(yaml.safe_load(yaml.safe_dump(dumped)))
    assert again == spec
    assert dump_spec(again) == dumped


JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(list(SPECS)),
    key=st.sampled_from(["kind", "name", "experiment", "gpus", "model", "command", "scorers", "seed",
                         "time_limit", "retry", "learning_rate", "nonsense_field", "dataset", "alpha"]),
    value=JUNK,
)
def test_invalid_input_only_raises_the_validation_error(base: str, key: str, value: object) -> None:
    data = {"experiment": "e", "name": "n", "kind": base, "command": ["true"], "model": "m", "dataset": "d",
            "records": "r", "scorers": [{"type": "length"}], "sft": "a", "aligned": "b"}
    data = {k: v for k, v in data.items() if k in SPEC_CLASSES[base].model_fields or k in ("kind",)}
    data[key] = value
    try:
        parse_spec(data)
    except ValidationError:
        pass
    try:
        validate_one(data, "f.yaml")
    except SpecError as e:
        msg = str(e)
        assert msg.startswith("f.yaml: ") and "\n" not in msg


@settings(max_examples=100, deadline=None)
@given(doc=JUNK)
def test_any_document_expands_or_raises_spec_error(doc: object) -> None:
    if not isinstance(doc, dict):
        doc = {"stages": doc}
    try:
        expand(doc, "x.yaml")
    except SpecError as e:
        assert "\n" not in str(e)


def test_field_errors_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"^f: temperature: Input should be greater than or equal to 0"):
        validate_one({"experiment": "e", "name": "n", "kind": "generate", "model": "m", "dataset": "d", "temperature": -1}, "f")
    with pytest.raises(SpecError, match=r"^f: lora\.rr: unknown field"):
        validate_one({"experiment": "e", "name": "n", "kind": "finetune", "model": "m", "dataset": "d", "lora": {"rr": 3}}, "f")
    with pytest.raises(SpecError, match=r"^f: kind: unknown kind 'train'"):
        validate_one({"experiment": "e", "name": "n", "kind": "train"}, "f")
    with pytest.raises(SpecError, match=r"^f: model.trust_remote_code|^f: model: trust_remote_code needs a pinned revision"):
        validate_one({"experiment": "e", "name": "n", "kind": "generate", "model": {"path": "m", "trust_remote_code": True}, "dataset": "d"}, "f")
    with pytest.raises(SpecError, match=r"^f: command: "):
        validate_one({"experiment": "e", "name": "n", "kind": "command", "command": []}, "f")
