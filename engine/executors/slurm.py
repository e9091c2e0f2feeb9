"""Slurm as an executor: batch scripts, `sbatch`, one `squeue` per poll, `scancel`.

Why the plain Slurm CLIs (argument lists, never a shell) and not submitit or pyslurm: the CLIs are
on every login node and match the cluster's own version; pyslurm must be compiled against the exact
libslurm of the site and breaks on upgrades; submitit pickles a Python callable per job, polls with
one `sacct` per job group and owns the job's folder layout, while labdeck already has a process that
runs a job from its run folder (`engine.launcher`). See docs/slurm.md.

What this module does (the worker glue is `engine.executors.slurm_worker`):

* `batch_script()` writes one script per job into its run folder (readable, rerunnable by hand):
  `#SBATCH` lines from the job's resources, the worker's defaults and the spec's `slurm:` block,
  then `exec python -m engine.launcher RUN_DIR`: the same launcher, `events.jsonl`, `exit.json` and
  `env.json` as a local job.
* `SlurmClient.submit()` runs `sbatch --parsable`; `find_by_name()` is how a worker killed between
  sbatch and the commit of the id finds the job again instead of submitting it twice.
* `SlurmClient.poll()` is ONE `squeue` call for all of labdeck's jobs (clusters throttle per-job
  polling); jobs it no longer lists are asked once of `sacct` (accounting on) or `scontrol show
  job` (accounting off).
* `end_of()` maps Slurm's terminal states to labdeck's status and reason; `exit.json` stays the
  source of truth for the exit code.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT_FILE = "job.sbatch"
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"})
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                      "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"})
SQUEUE_FORMAT = "%i|%T|%r|%N|%j"


class SlurmError(RuntimeError):
    """A Slurm command failed; the message is Slurm's own (e.g. 'invalid partition specified')."""


@dataclass(frozen=True)
class Defaults:
    """The worker's `--partition/--account/--qos/--sbatch-arg`, which a spec's `slurm:` block overrides."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_args: tuple[str, ...] = ()


@dataclass
class SlurmJob:
    """What one poll learned about one Slurm job."""

    slurm_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    name: str = ""
    ended_at: float | None = None  # monotonic time a terminal state was first seen (by the executor)


@dataclass
class Poll:
    jobs: dict[str, SlurmJob] = field(default_factory=dict)
    calls: int = 0  # scheduler commands this poll cost (squeue + any fallback)


def job_name(home: Path, job_id: int) -> str:
    """`labdeck-<home tag>-<id>`: the labdeck id for people reading squeue, a short hash of the home
    so two homes on one cluster never mistake each other's jobs (the crash-safe lookup is by name)."""
    tag = hashlib.sha1(str(Path(home).absolute()).encode()).hexdigest()[:6]
    return f"labdeck-{tag}-{job_id}"


def _slurm_time(seconds: float) -> str:
    """sbatch --time as D-HH:MM:SS, rounded up to whole seconds (Slurm itself counts minutes)."""
    s = max(1, int(-(-seconds // 1)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}-{h:02d}:{m:02d}:{s:02d}"


def sbatch_options(spec: dict[str, Any], defaults: Defaults, name: str, run_dir: Path) -> list[str]:
    """The `#SBATCH` options for one job: its resources, the worker's defaults, the spec's overrides."""
    sl: dict[str, Any] = spec.get("slurm") or {}
    gpus = int(spec.get("gpus") or 0)
    nodes = int(sl.get("nodes") or 1)
    gpn = sl.get("gpus_per_node")
    if gpn is None:
        gpn = gpus if nodes == 1 else -(-gpus // nodes)
    tasks = sl.get("tasks_per_node") or (gpn if nodes > 1 or (gpn and gpn > 1 and spec.get("kind") != "command") else 1)
    opts = [f"--job-name={name}", f"--output={run_dir / 'log.txt'}", "--open-mode=append", f"--chdir={run_dir}",
            "--export=ALL", f"--nodes={nodes}"]
    if tasks and tasks > 1 or nodes > 1:
        opts.append(f"--ntasks-per-node={tasks or 1}")
    if gpn:
        opts.append(f"--gres=gpu:{gpn}")
    for key, flag in (("partition", "--partition"), ("account", "--account"), ("qos", "--qos")):
        value = sl.get(key) or getattr(defaults, key)
        if value:
            opts.append(f"{flag}={value}")
    if sl.get("constraint"):
        opts.append(f"--constraint={sl['constraint']}")
    if sl.get("cpus_per_task"):
        opts.append(f"--cpus-per-task={int(sl['cpus_per_task'])}")
    if sl.get("mem_gb"):
        opts.append(f"--mem={int(float(sl['mem_gb']) * 1024)}M")
    limit = spec.get("time_limit")
    if limit:
        opts.append(f"--time={_slurm_time(float(limit))}")
        before = int(sl.get("signal_before_s", 120) or 0)
        if before and before < float(limit):
            opts.append(f"--signal=B:USR1@{before}")  # the launcher passes it on: checkpoint now
    opts.append("--requeue" if sl.get("requeue") else "--no-requeue")
    opts.extend(defaults.sbatch_args)
    opts.extend(str(a) for a in sl.get("extra") or [])
    return opts


def batch_script(spec: dict[str, Any], defaults: Defaults, name: str, run_dir: Path, env: dict[str, str],
                 python: str = sys.executable) -> str:
    """The whole batch script: `#SBATCH` lines, the labdeck variables, then the launcher."""
    lines = ["#!/bin/bash", f"# labdeck job {env.get('LABDECK_JOB_ID', '?')}: rerun by hand with `sbatch {SCRIPT_FILE}`"]
    lines += [f"#SBATCH {opt}" for opt in sbatch_options(spec, defaults, name, run_dir)]
    lines.append("")
    for key in sorted(env):
        lines.append(f"export {key}={shlex.quote(env[key])}")
    if not int(spec.get("gpus") or 0):
        lines.append("export CUDA_VISIBLE_DEVICES=")  # a CPU job must not grab a card on a GPU node
    lines.append(f"cd {shlex.quote(str(run_dir))}")
    lines.append(f"exec {shlex.quote(python)} -m engine.launcher {shlex.quote(str(run_dir))}")
    return "\n".join(lines) + "\n"


def write_script(run_dir: Path, text: str) -> Path:
    path = run_dir / SCRIPT_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """`squeue -o SQUEUE_FORMAT` or `sacct -n -X -P -o JobID,State,Reason,NodeList,JobName` lines.

    sacct writes a cancelled job's state as `CANCELLED by UID` (kept as its reason when it has none)
    and a pending job's nodes as `None assigned`; squeue writes `(null)` for both blanks."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) != 5 or not parts[0]:
            continue
        sid, state_text, reason, nodes, name = parts
        words = state_text.split()
        state = words[0].rstrip("+") if words else ""
        reason = "" if reason in ("None", "(null)") else reason
        if len(words) > 1 and not reason:
            reason = " ".join(words[1:])
        out[sid] = SlurmJob(sid, state, reason, "" if nodes in ("(null)", "", "None assigned") else nodes, name)
    return out


def parse_scontrol(text: str) -> SlurmJob | None:
    """`scontrol show job -o ID`: one line of key=value pairs."""
    fields: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    if "JobId" not in fields:
        return None
    reason = fields.get("Reason", "")
    return SlurmJob(fields["JobId"], fields.get("JobState", ""), "" if reason == "None" else reason,
                    "" if fields.get("NodeList") in (None, "(null)") else fields["NodeList"], fields.get("JobName", ""))


class SlurmClient:
    """The Slurm commands labdeck runs, each as an argument list with a timeout; counts its calls."""

    def __init__(self, env: dict[str, str] | None = None, timeout_s: float = 60.0) -> None:
        self.env = env
        self.timeout_s = timeout_s
        self.calls: dict[str, int] = {}
        self._accounting: bool | None = None

    def _run(self, argv: list[str], check: bool = True, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s,  # noqa: S603
                               env=env if env is not None else self.env, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SlurmError(f"{argv[0]}: {e}") from e
        if check and p.returncode != 0:
            message = " ".join((p.stderr.strip() or p.stdout.strip() or f"exit status {p.returncode}").split())
            raise SlurmError(message)
        return p

    @staticmethod
    def available() -> str | None:
        """None if sbatch is on PATH, else why not (the worker refuses to start with it)."""
        return None if shutil.which("sbatch") else "sbatch is not on PATH: run the worker on a Slurm login node"

    def accounting(self) -> bool:
        """Whether sacct can answer (slurmdbd configured); asked once per worker."""
        if self._accounting is None:
            p = self._run(["scontrol", "show", "config"], check=False)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("AccountingStorageType")), "")
            self._accounting = bool(line) and not line.rstrip().endswith("accounting_storage/none")
        return self._accounting

    def submit(self, script: Path, env: dict[str, str] | None = None) -> str:
        """sbatch the script; `env` (with --export=ALL in the script) is the job's environment, so
        values that must not be written to a file on shared storage (API keys) still reach it."""
        p = self._run(["sbatch", "--parsable", str(script)], env=env)
        return p.stdout.strip().split(";")[0]

    def find_by_name(self, name: str) -> SlurmJob | None:
        """The newest job with this name that Slurm still knows, or None."""
        p = self._run(["squeue", "-h", "-t", "all", f"--name={name}", "-o", SQUEUE_FORMAT], check=False)
        jobs = [j for j in parse_squeue(p.stdout).values() if j.name == name]
        if not jobs and self.accounting():
            p = self._run(["sacct", "-n", "-X", "-P", f"--name={name}", "-o", "JobID,State,Reason,NodeList,JobName"],
                          check=False)
            jobs = [j for j in parse_squeue(p.stdout).values() if j.name == name]
        return max(jobs, key=lambda j: int(j.slurm_id.split("_")[0]) if j.slurm_id.split("_")[0].isdigit() else 0,
                   default=None)

    def poll(self, slurm_ids: list[str], name_prefix: str) -> Poll:
        """ONE squeue call for all our jobs; those it no longer knows are asked once more each."""
        out = Poll()
        if not slurm_ids:
            return out
        p = self._run(["squeue", "-h", "-t", "all", "--me", "-o", SQUEUE_FORMAT], check=False)
        out.calls += 1
        if p.returncode != 0:
            raise SlurmError(" ".join(p.stderr.split()) or "squeue failed")
        listed = parse_squeue(p.stdout)
        for sid in slurm_ids:
            if sid in listed:
                out.jobs[sid] = listed[sid]
        missing = [sid for sid in slurm_ids if sid not in out.jobs]
        if missing and self.accounting():
            p = self._run(["sacct", "-n", "-X", "-P", "-j", ",".join(missing), "-o",
                           "JobID,State,Reason,NodeList,JobName"], check=False)
            out.calls += 1
            out.jobs.update({k: v for k, v in parse_squeue(p.stdout).items() if k in missing})
            missing = [sid for sid in missing if sid not in out.jobs]
        for sid in missing:  # rare: purged from squeue (MinJobAge) with accounting off
            p = self._run(["scontrol", "show", "job", "-o", sid], check=False)
            out.calls += 1
            job = parse_scontrol(p.stdout) if p.returncode == 0 else None
            out.jobs[sid] = job or SlurmJob(sid, "UNKNOWN", "Slurm no longer knows this job")
        return out

    def cancel(self, slurm_id: str) -> None:
        self._run(["scancel", slurm_id], check=False)

    def partitions(self) -> list[dict[str, Any]]:
        """Partitions with their nodes and GPUs (idle/total), for the GPUs screen."""
        p = self._run(["sinfo", "-h", "-o", "%R|%a|%D|%T|%G|%C"], check=False)
        parts: dict[str, dict[str, Any]] = {}
        for line in p.stdout.splitlines():
            bits = line.split("|")
            if len(bits) != 6:
                continue
            name, avail, count, state, gres, cpus = bits
            gpus = _gres_gpus(gres) * int(count or 0)
            part = parts.setdefault(name, {"partition": name, "available": avail, "nodes": 0, "gpus_total": 0,
                                           "gpus_idle": 0, "cpus": cpus, "states": {}})
            part["nodes"] += int(count or 0)
            part["gpus_total"] += gpus
            if state.rstrip("*~#") == "idle":
                part["gpus_idle"] += gpus
            part["states"][state] = part["states"].get(state, 0) + int(count or 0)
        return list(parts.values())


def _gres_gpus(gres: str) -> int:
    total = 0
    for item in gres.split(","):
        bits = item.split("(")[0].split(":")
        if bits[0] == "gpu" and bits[-1].isdigit():
            total += int(bits[-1])
    return total


@dataclass(frozen=True)
class End:
    """How a job that left Slurm ended, in labdeck's terms."""

    status: str  # succeeded | failed | cancelled | interrupted
    reason: str | None
    detail: str


def end_of(state: str, reason: str, exit_record: dict[str, Any] | None, stop_reason: str | None) -> End | None:
    """Slurm's terminal state -> labdeck's status/reason, or None when the launcher's exit.json decides.

    COMPLETED and FAILED are the job's own doing: `engine.outcome` classifies them from `exit.json`
    (the exit code, OOM, the job's error events). The others are Slurm's doing and say so here.
    """
    if state == "CANCELLED":
        if stop_reason == "time_limit":
            return End("failed", "time_limit", "stopped at its time limit (scancel)")
        if stop_reason in ("cancel", "stop_now"):
            return End("cancelled", "cancelled", "cancelled (scancel)")
        return End("cancelled", "cancelled", f"cancelled outside labdeck (Slurm: CANCELLED{' ' + reason if reason else ''})")
    if state in ("TIMEOUT", "DEADLINE"):
        what = "its time limit" if state == "TIMEOUT" else "its deadline"
        return End("failed", "time_limit", f"Slurm stopped it at {what} ({state})")
    if state == "OUT_OF_MEMORY":
        return End("failed", "signal", "killed for using more memory than it asked for (Slurm: OUT_OF_MEMORY)")
    if state in ("NODE_FAIL", "BOOT_FAIL"):
        return End("interrupted", "node_fail", f"Slurm lost the job's node ({state}{': ' + reason if reason else ''})")
    if state == "PREEMPTED":
        return End("interrupted", "preempted", "preempted by Slurm for another job (PREEMPTED)")
    if state == "UNKNOWN" and exit_record is None:
        return End("interrupted", "worker_lost", reason or "Slurm no longer knows this job and it left no exit record")
    if state in ("COMPLETED", "FAILED", "UNKNOWN", "SPECIAL_EXIT", "REVOKED") and exit_record is None and state != "COMPLETED":
        return End("failed", "nonzero_exit", f"Slurm: {state}{' (' + reason + ')' if reason else ''}; the job left no exit record")
    return None
