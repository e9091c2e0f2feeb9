"""Typed job specs: one class per kind, validated at construction.

`parse_spec(data)` picks the class from `kind` and returns a validated spec, raising
`pydantic.ValidationError`; `engine.specfile` turns that into one-line messages that name the file.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from engine.outputs import PRIMARY_OUTPUT  # re-exported: what a stage's `output` means
from engine.specs.base import JobSpecBase, RetryPolicy, parse_duration
from engine.specs.command import CommandSpec
from engine.specs.common import DatasetRef, ModelRef
from engine.specs.finetune import FinetuneSpec, LoraConfig
from engine.specs.generate import GenerateSpec
from engine.specs.merge import MergeSpec
from engine.specs.score import ScoreSpec

SPEC_CLASSES: dict[str, type[JobSpecBase]] = {
    "command": CommandSpec,
    "generate": GenerateSpec,
    "score": ScoreSpec,
    "finetune": FinetuneSpec,
    "merge": MergeSpec,
}
KINDS = tuple(SPEC_CLASSES)

JobSpec = Annotated[
    CommandSpec | GenerateSpec | ScoreSpec | FinetuneSpec | MergeSpec, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)


def parse_spec(data: Any) -> JobSpecBase:
    """Validate a mapping (from YAML/JSON or the TUI's form) into the spec of its kind."""
    return _ADAPTER.validate_python(data)


def dump_spec(spec: JobSpecBase) -> dict[str, Any]:
    """The JSON-able form stored in the database and written to spec.json."""
    return spec.model_dump(mode="json")


__all__ = [
    "KINDS", "PRIMARY_OUTPUT", "SPEC_CLASSES", "CommandSpec", "DatasetRef", "FinetuneSpec", "GenerateSpec",
    "JobSpecBase", "LoraConfig", "MergeSpec", "ModelRef", "RetryPolicy", "ScoreSpec", "dump_spec",
    "parse_duration", "parse_spec",
]
