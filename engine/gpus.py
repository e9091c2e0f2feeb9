"""What the box's GPUs hold right now: memory, utilisation and the processes on each.

Only the worker talks to NVML (through `nvidia-ml-py`, imported as `pynvml`); it publishes what it
sees as a JSON snapshot in the store (`db.queries.GPU_SNAPSHOT_KEY`) for the CLI and the TUI.

Three sources, chosen by `open_inventory()`:

* `LABDECK_FAKE_GPUS=/path/to/gpus.json`: a fake inventory read from a file on every call, so a
  test can add a foreign process or fill a card while the worker runs. Format:
  `{"gpus": [{"index": 0, "name": "...", "mem_total_mb": 81920, "mem_used_mb": 0,
  "util_pct": 0, "processes": [{"pid": 123, "mem_mb": 2048, "name": "python"}]}]}`
* NVML, when the library loads and finds devices.
* Nothing: a box without GPUs (or without a driver) has an empty inventory and still runs CPU jobs.

Indices are NVML's, which follow the PCI bus order; the worker sets `CUDA_DEVICE_ORDER=PCI_BUS_ID`
for every job so that CUDA numbers the cards the same way.

Which processes are "ours" is decided by `classify()`: a GPU process belongs to a job if it is in
the job's session (the launcher is the session leader) or carries the job's `LABDECK_JOB_ID`.
Everything else is someone else's (foreign), and jobs avoid such GPUs unless they allow it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ENV_FAKE_GPUS = "LABDECK_FAKE_GPUS"


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    mem_mb: float
    name: str = ""
    job_id: int | None = None  # set by classify(); None means not one of ours


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    mem_total_mb: float
    mem_used_mb: float
    util_pct: float | None
    processes: tuple[GpuProcess, ...] = ()
    uuid: str = ""

    @property
    def mem_free_mb(self) -> float:
        return max(0.0, self.mem_total_mb - self.mem_used_mb)


class Inventory(Protocol):
    def read(self) -> list[Gpu]: ...

    @property
    def source(self) -> str: ...


class EmptyInventory:
    """A box without GPUs (or without a working driver)."""

    def __init__(self, why: str = "no GPU") -> None:
        self.why = why

    @property
    def source(self) -> str:
        return f"none ({self.why})"

    def read(self) -> list[Gpu]:
        return []


class FakeInventory:
    """GPUs described by a JSON file, re-read on every call (the test edits it while the worker runs)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def source(self) -> str:
        return f"fake ({self.path})"

    def read(self) -> list[Gpu]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        gpus = []
        for g in data.get("gpus", []):
            procs = tuple(
                GpuProcess(int(p["pid"]), float(p.get("mem_mb", 0.0)), str(p.get("name", "")))
                for p in g.get("processes", [])
            )
            gpus.append(Gpu(int(g["index"]), str(g.get("name", "Fake GPU")), float(g.get("mem_total_mb", 0.0)),
                            float(g.get("mem_used_mb", 0.0)), g.get("util_pct"), procs, str(g.get("uuid", ""))))
        return gpus


class NvmlInventory:
    """The real thing. NVML is initialised once; device handles are cached.

    Process names come from psutil when the pid is visible in our pid namespace (in a container
    NVML may report host pids we cannot see; such processes count as foreign, which is right).
    """

    def __init__(self) -> None:
        import pynvml  # nvidia-ml-py: a thin ctypes binding, no CUDA runtime, no torch

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self._names = [_text(pynvml.nvmlDeviceGetName(h)) for h in self._handles]
        self._uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in self._handles]

    @property
    def source(self) -> str:
        return "nvml"

    def read(self) -> list[Gpu]:
        nv = self._nvml
        gpus = []
        for i, h in enumerate(self._handles):
            try:
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                total, used = mem.total / 2**20, mem.used / 2**20
            except nv.NVMLError:
                continue  # a card that fell off the bus: leave it out rather than guess
            try:
                util: float | None = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
            except nv.NVMLError:
                util = None
            procs: dict[int, GpuProcess] = {}
            for getter in (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses):
                try:
                    for p in getter(h):
                        mem_mb = (p.usedGpuMemory or 0) / 2**20
                        prev = procs.get(p.pid)
                        procs[p.pid] = GpuProcess(p.pid, mem_mb + (prev.mem_mb if prev else 0.0), _proc_name(p.pid))
                except nv.NVMLError:
                    pass
            gpus.append(Gpu(i, self._names[i], total, used, util, tuple(procs.values()), self._uuids[i]))
        return gpus


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _proc_name(pid: int) -> str:
    try:
        import psutil

        return psutil.Process(pid).name()
    except Exception:  # noqa: BLE001 - a process in another namespace, or gone already
        return ""


def open_inventory(env: Mapping[str, str] | None = None) -> Inventory:
    """The fake inventory if `LABDECK_FAKE_GPUS` is set, else NVML, else an empty one."""
    env = os.environ if env is None else env
    fake = env.get(ENV_FAKE_GPUS)
    if fake:
        return FakeInventory(fake)
    try:
        inv = NvmlInventory()
    except Exception as e:  # noqa: BLE001 - no library, no driver, no permission: all mean "no GPU"
        return EmptyInventory(f"NVML unavailable: {type(e).__name__}")
    if not inv._handles:
        return EmptyInventory("NVML found no devices")
    return inv


def classify(gpus: list[Gpu], pid_to_job: Mapping[int, int], job_of_pid=None) -> list[Gpu]:  # noqa: ANN001
    """Mark each GPU process with the job it belongs to (None: someone else's).

    `pid_to_job` maps known pids (launchers and their session members) to job ids; `job_of_pid`
    is an optional fallback called for the remaining pids (the worker looks up the session and
    the LABDECK_JOB_ID environment variable).
    """
    out = []
    for g in gpus:
        procs = []
        for p in g.processes:
            job = pid_to_job.get(p.pid)
            if job is None and job_of_pid is not None:
                job = job_of_pid(p.pid)
            procs.append(GpuProcess(p.pid, p.mem_mb, p.name, job))
        out.append(Gpu(g.index, g.name, g.mem_total_mb, g.mem_used_mb, g.util_pct, tuple(procs), g.uuid))
    return out


@dataclass
class SnapshotMeta:
    allowed: frozenset[int] | None = None  # the GPUs the worker may use; None is all
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def snapshot_json(gpus: list[Gpu], meta: SnapshotMeta | None = None, now: float | None = None) -> str:
    """The JSON stored under `GPU_SNAPSHOT_KEY` (read back by `db.queries.gpu_snapshot`)."""
    meta = meta or SnapshotMeta()
    data = {
        "t": time.time() if now is None else now,
        "source": meta.source,
        "gpus": [
            {
                "index": g.index, "name": g.name, "uuid": g.uuid,
                "mem_total_mb": round(g.mem_total_mb, 1), "mem_used_mb": round(g.mem_used_mb, 1),
                "util_pct": g.util_pct,
                "allowed": meta.allowed is None or g.index in meta.allowed,
                "processes": [
                    {"pid": p.pid, "mem_mb": round(p.mem_mb, 1), "job_id": p.job_id, "name": p.name}
                    for p in g.processes
                ],
            }
            for g in gpus
        ],
        **meta.extra,
    }
    return json.dumps(data, sort_keys=True)
