"""What every job spec shares: identity, resources, scheduling and retry policy.

Specs are pydantic models with `extra="forbid"` (a misspelt field is an error, not a silent
default) and a docstring under every field, which pydantic turns into the field's description:
the same text shows in `labdeck spec KIND`, in the TUI's form and in validation messages.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from engine.specs.form import form
from engine.specs.slurm import SlurmOptions
from engine.specs.strict import StrictModel  # noqa: F401 - the spec classes import it from here

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,\-\[\] ]{0,199}$")

FailureName = Literal["nonzero_exit", "signal", "time_limit", "cuda_oom", "spawn_error", "worker_lost", "node_fail",
                      "preempted"]


class RetryPolicy(StrictModel):
    """When the worker queues a new attempt on its own (pueue and Slurm leave it to you; so do we by default)."""

    max: int = Field(0, ge=0, le=20)
    """How many extra attempts at most; 0 means never retry automatically."""
    on: list[FailureName] = ["cuda_oom"]
    """Which failure reasons trigger a retry (e.g. cuda_oom, time_limit, worker_lost)."""


def parse_duration(value: float | int | str | None) -> float | None:
    """'90', '90s', '15m', '2h', '1d' or a number of seconds -> seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a duration like 90, 90s, 15m, 2h or 1d")
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not m:
        raise ValueError(f"{value!r} is not a duration like 90, 90s, 15m, 2h or 1d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


class JobSpecBase(StrictModel):
    """Fields every job kind has. Subclasses add their own and set `kind`."""

    experiment: str = Field(min_length=1, max_length=200, json_schema_extra=form(common=True))
    """The experiment this job belongs to; created on first use."""
    name: str = Field(min_length=1, max_length=200, json_schema_extra=form(common=True))
    """A short name for the job, shown in tables (sweeps append their point)."""
    description: str = ""
    """Free text for the person reading the results later."""
    gpus: int = Field(0, ge=0, le=64, json_schema_extra=form(common=True))
    """How many GPUs the job needs; 0 runs it on the CPU."""
    min_free_mem_gb: float = Field(0.0, ge=0)
    """Start only on GPUs with at least this much free memory (GiB)."""
    share_gpu_mem_gb: float | None = Field(None, gt=0)
    """If set, the job may share a GPU with other sharing jobs, counting this much memory (GiB) against it."""
    allow_foreign: bool = False
    """Also use GPUs where someone else's processes run."""
    priority: int = Field(0, ge=-1000, le=1000)
    """Higher runs first; equal priorities run oldest first."""
    time_limit: float | None = None
    """Wall-clock limit, as seconds or '30m', '2h'; the job is stopped and marked time_limit."""
    retry: RetryPolicy = RetryPolicy()
    """Automatic retries for chosen failure reasons."""
    after: list[int] = []
    """Ids of jobs already in the queue that must succeed before this one starts."""
    seed: int = 0
    """Random seed for everything the job samples; sweeps set it from their `seeds` list."""
    slurm: SlurmOptions | None = None
    """Slurm cluster options (partition, account, nodes, ...); used only by a worker with `--executor slurm`."""

    @field_validator("name", "experiment")
    @classmethod
    def _printable(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("use letters, digits, spaces and . _ - + = , [ ] (at most 200, not starting with a symbol)")
        return v

    @field_validator("time_limit", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        seconds = parse_duration(v)  # type: ignore[arg-type]
        if seconds is not None and seconds <= 0:
            raise ValueError("must be positive")
        return seconds
