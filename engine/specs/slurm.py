"""The `slurm:` block of a spec: what a job asks of a Slurm cluster beyond `gpus:` and `time_limit`.

Every field overrides the worker's default (`labdeck worker start --executor slurm --partition ...`)
for this job only; the local executor ignores the block. Unknown fields are refused like everywhere
else in a spec, so a misspelt `partiton:` is an error at submit, not a job on the wrong partition.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from engine.specs.strict import StrictModel

_WORD = re.compile(r"^[A-Za-z0-9_.:,=+\-\[\]&|!()*]{1,200}$")


class SlurmOptions(StrictModel):
    """Where and how the job runs on a Slurm cluster (used only by `--executor slurm`)."""

    partition: str | None = None
    """Partition (queue) to submit to; default the worker's `--partition`, else the cluster's default."""
    account: str | None = None
    """Account to charge; default the worker's `--account`."""
    qos: str | None = None
    """Quality of service; default the worker's `--qos`."""
    constraint: str | None = None
    """Node features the job needs, e.g. 'a100|h100' (sbatch --constraint)."""
    nodes: int = Field(1, ge=1, le=1024)
    """Nodes; more than one launches one process per GPU on every node through srun."""
    gpus_per_node: int | None = Field(None, ge=0, le=64)
    """GPUs on each node (default: `gpus` on one node)."""
    tasks_per_node: int | None = Field(None, ge=1, le=256)
    """Processes on each node for a distributed launch (default: gpus_per_node, at least 1)."""
    cpus_per_task: int | None = Field(None, ge=1, le=1024)
    """CPUs for each task (sbatch --cpus-per-task)."""
    mem_gb: float | None = Field(None, gt=0)
    """Memory per node in GiB (sbatch --mem)."""
    requeue: bool = False
    """The job may be preempted and requeued by Slurm (sbatch --requeue); it must resume from checkpoints."""
    signal_before_s: int = Field(120, ge=0, le=3600)
    """Seconds before the time limit at which the job gets SIGUSR1 (checkpoint now); 0: none."""
    extra: list[str] = []
    """More sbatch options, each one argument, e.g. ['--exclusive', '--reservation=r1']."""

    @field_validator("partition", "account", "qos", "constraint")
    @classmethod
    def _word(cls, v: str | None) -> str | None:
        if v is not None and not _WORD.match(v):
            raise ValueError("letters, digits and . _ - : , = + [ ] & | ! ( ) * only")
        return v

    @field_validator("extra")
    @classmethod
    def _options(cls, v: list[str]) -> list[str]:
        for arg in v:
            if not arg.startswith("-") or "\n" in arg or "\x00" in arg:
                raise ValueError(f"{arg!r}: each extra item is one sbatch option starting with '-' on one line")
        return v
