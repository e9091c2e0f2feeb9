"""The executor seam: how the worker loop starts, watches, stops and re-adopts a job's processes.

The worker decides *what* runs and *where* (the queue, the scheduler, the store); an executor
decides *how* a job's processes exist. Today there is one, `engine.executors.local.LocalExecutor`
(a launcher process per job on this box, in its own session). A batch-system executor (Slurm:
`sbatch` / `squeue` / `scancel`) implements the same handful of calls and keeps the rest of the
worker as it is.

The contract, in the order the worker uses it:

1. `start(launch)` creates the job's processes *held at a gate*: nothing of the user's command
   runs yet. It returns a `Handle` whose `external_id` the worker commits to the store.
2. `release(handle, go)` opens the gate once the store knows the job (`go=True`), or closes it
   for good when the store refused (`go=False`); a closed gate ends the job without running it
   (its exit record says `"started": false`).
3. `poll(handle)` is called every round and returns True once the job's processes are gone; it
   must be cheap and must never block.
4. `cancel(handle, grace_s)` begins stopping a job (non-blocking); `stop_step(handle)` advances
   that and returns True once nothing of the job is left.
5. `adopt(job_id, run_dir, external_id)` re-attaches a restarted worker to a job started by an
   earlier one: a live handle, or None if the job's processes are gone (the worker then finishes
   the job from its exit record). An executor must never kill what it cannot prove is the job's.
6. `cleanup(handle)` runs after a job ended by itself (or was found gone by `gone()` after a
   restart): stop anything it left behind.
7. `exit_record(handle)` is the launcher's `exit.json` (how the command ended), or None.

`external_id` is opaque to the worker: a string the executor can parse back in `adopt` (the local
executor stores the launcher's pid, its boot-relative start ticks and the boot id; a Slurm one
would store the Slurm job id). Executors are called from the worker's one thread only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Launch:
    """What the worker asks an executor to start: one prepared run folder."""

    job_id: int
    run_dir: Path
    env: dict[str, str]  # the job's whole environment (engine.rundir.job_env)
    gpus: tuple[int, ...] = ()


@dataclass
class Handle:
    """An executor's grip on one job's processes. Fields other than `state` are read by the worker."""

    job_id: int
    run_dir: Path
    external_id: str  # opaque, stored with the job; `adopt` parses it back
    pid: int | None = None  # the local session leader (GPU attribution); None where there is none
    ended: bool = False
    returncode: int | None = None  # the launcher's own exit status, when the executor knows it
    adopted: bool = False
    survivors: list[int] = field(default_factory=list)  # processes a stop could not end
    elapsed_s: float | None = None  # adopted: how long the job has run, on a clock no wall-clock step moves
    state: Any = None  # the executor's private state


class Executor(ABC):
    """See the module docstring for the order of calls and what each must guarantee."""

    name = "abstract"

    @abstractmethod
    def start(self, launch: Launch) -> Handle: ...

    @abstractmethod
    def release(self, handle: Handle, go: bool) -> None: ...

    @abstractmethod
    def poll(self, handle: Handle) -> bool: ...

    @abstractmethod
    def cancel(self, handle: Handle, grace_s: float) -> None: ...

    @abstractmethod
    def stop_step(self, handle: Handle) -> bool: ...

    @abstractmethod
    def adopt(self, job_id: int, run_dir: Path, external_id: str) -> Handle | None: ...

    def legacy_id(self, pid: int | None, pid_start_time: float | None) -> str:
        """The external id of a row written before the store kept one (pid columns only); "" if none."""
        return ""

    def gone(self, job_id: int, run_dir: Path, external_id: str) -> Handle:
        """A handle for a job whose processes are gone (`adopt` said None), so the worker can finish it."""
        return Handle(job_id=job_id, run_dir=run_dir, external_id=external_id, ended=True, adopted=True)

    def cleanup(self, handle: Handle) -> list[int]:
        """Stop what a job that ended by itself left behind; returns what survived (nothing by default)."""
        return []

    @abstractmethod
    def exit_record(self, handle: Handle) -> dict[str, Any] | None: ...

    def wake_fds(self, handles: list[Handle]) -> list[int]:
        """File descriptors that turn readable when a job ends, so the worker wakes at once."""
        return []

    def forget(self, handle: Handle) -> None:  # noqa: B027 - optional
        """The worker is done with this handle (release descriptors and the like)."""

    def close(self) -> None:  # noqa: B027 - optional
        """The worker is exiting; jobs keep running."""
