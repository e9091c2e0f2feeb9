"""A user's own command line (a TRL or axolotl script, an eval harness) run as a labdeck job."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from engine.specs.base import JobSpecBase
from engine.specs.form import form

RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})


class CommandSpec(JobSpecBase):
    """Runs `command` as given (no shell), with GPUs assigned through CUDA_VISIBLE_DEVICES.

    It reports progress and metrics by appending JSON lines to the file named in the
    LABDECK_EVENTS environment variable (see `engine.events.Reporter`), or simply by printing.
    """

    kind: Literal["command"] = "command"
    command: list[str] = Field(min_length=1, json_schema_extra=form(common=True))
    """The program and its arguments, as a list; never passed through a shell."""
    env: dict[str, str] = {}
    """Extra environment variables for the command."""
    cwd: str | None = None
    """Working directory; default the job's run folder."""
    multi_gpu: Literal["none", "accelerate"] = "none"
    """With several GPUs: 'accelerate' starts it through `accelerate launch`, one process per GPU."""

    @field_validator("command")
    @classmethod
    def _no_empty(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("the program name is empty")
        if any("\x00" in a for a in v):
            raise ValueError("arguments may not contain NUL bytes")
        return v

    @field_validator("env")
    @classmethod
    def _not_labdecks_own(cls, v: dict[str, str]) -> dict[str, str]:
        """labdeck sets which GPUs a job sees and where it reports; a spec cannot override that (a
        `gpus: 0` job could otherwise take a card another job holds)."""
        for name in v:
            if name in RESERVED_ENV or name.startswith("LABDECK_"):
                raise ValueError(f"{name} is set by labdeck and cannot be overridden (remove it from env)")
            if not name or "=" in name or "\x00" in name or "\x00" in v[name]:
                raise ValueError(f"{name!r} is not a valid environment variable")
        return v
