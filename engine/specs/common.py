"""Spec pieces that several engine kinds share: where a model and a dataset come from."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from engine.specs.base import StrictModel

COMMIT_HASH = re.compile(r"[0-9a-f]{40}")


class ModelRef(StrictModel):
    """A model: a hub id (e.g. Qwen/Qwen2.5-0.5B) or a local folder saved with save_pretrained."""

    path: str = Field(min_length=1)
    """Hub id or local folder."""
    revision: str | None = None
    """Hub revision (a commit hash pins it); recorded with the results."""
    trust_remote_code: bool = False
    """Run code shipped with the model. Off unless you trust it; needs a pinned `revision`."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """'auto' is bf16 on a GPU and fp32 on the CPU."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: object) -> object:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _remote_code_needs_revision(self) -> ModelRef:
        if self.trust_remote_code and not (self.revision and COMMIT_HASH.fullmatch(self.revision)):
            raise ValueError("trust_remote_code needs a pinned revision: a 40-hex-digit commit hash, so the "
                             "code that runs is known (a branch or tag such as 'main' can move)")
        return self


class DatasetRef(StrictModel):
    """Records to read: a local jsonl/json/parquet file, or a hub dataset id."""

    path: str | list[str] = Field(min_length=1)
    """File path or hub id; a list reads several files in order (pipeline stages give lists)."""
    split: str = "train"
    """Split, for hub datasets."""
    config: str | None = None
    """Hub dataset configuration name."""
    instruction_field: str = "instruction"
    """Field holding the instruction (prompt)."""
    input_field: str | None = "input"
    """Field holding the optional input/context appended to the instruction; None if absent."""
    messages_field: str | None = None
    """Field holding a chat (list of {role, content}); used instead of instruction/input when set."""
    output_field: str = "output"
    """Field holding the reference or training response."""
    id_field: str | None = None
    """Field identifying a record (used for resuming); default its position."""
    limit: int | None = Field(None, gt=0)
    """Use only the first N records."""

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, data: object) -> object:
        return {"path": data} if isinstance(data, (str, list)) else data
