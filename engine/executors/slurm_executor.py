"""`SlurmExecutor`: the executor seam (`engine.executors.Executor`) over sbatch, squeue and scancel.

* `start` writes the job's batch script into its run folder and submits it (`sbatch --parsable`);
  the handle's `external_id` is the Slurm job id. The worker's start gate maps onto Slurm's own
  submission: `release(go=False)` (the store refused to record the job) cancels it at once, and a
  worker killed between sbatch and that commit is covered by the lookup by job name on restart
  (`engine.executors.slurm_worker.SlurmWorker.reconcile`).
* `poll` is called per job every round but never costs a command per job: the first call after
  `poll_s` refreshes every live handle with ONE `squeue` (`SlurmClient.poll`), the others read
  that answer. A job is over once Slurm says it ended and its `exit.json` is readable (or a few
  seconds have passed: over NFS the file can show late; a job Slurm killed may have none).
* `cancel` is one `scancel`; `stop_step` is done when Slurm reports the job ended.
* `adopt` trusts Slurm: a restarted worker gets a handle for every stored Slurm id, and the next
  poll says whether it still runs.
* `ended_by` turns Slurm's terminal state into labdeck's outcome (TIMEOUT -> time_limit,
  NODE_FAIL -> interrupted node_fail, ...); None leaves it to `exit.json` (COMPLETED, FAILED).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from db.models import JobStatus
from engine import outcome
from engine.executors import Executor, Handle, Launch
from engine.executors import slurm as sl
from engine.launcher import SPEC_FILE, read_exit

log = logging.getLogger("labdeck.worker")

# What a batch script exports itself (the rest comes from the submitting shell: --export=ALL).
EXPORT_PREFIXES = ("LABDECK_", "PYTHONUNBUFFERED", "PYTORCH_", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(self, home: Path, defaults: sl.Defaults | None = None, client: sl.SlurmClient | None = None,
                 poll_s: float = 2.0, exit_wait_s: float = 15.0) -> None:
        self.home = Path(home)
        self.defaults = defaults or sl.Defaults()
        self.client = client or sl.SlurmClient()
        self.poll_s = poll_s
        self.exit_wait_s = exit_wait_s
        self.live: dict[str, Handle] = {}  # Slurm id -> handle
        self.polls = 0
        self._next_poll = 0.0
        self.changed: dict[int, dict[str, str]] = {}  # job id -> Slurm columns to record (the worker drains it)

    # ------------------------------------------------------------------ start

    def script_for(self, launch: Launch) -> Path:
        spec = json.loads((launch.run_dir / SPEC_FILE).read_text(encoding="utf-8"))
        env = {k: v for k, v in launch.env.items() if k.startswith(EXPORT_PREFIXES)}
        env["LABDECK_NO_GATE"] = "1"  # Slurm's submission is the gate (see the module docstring)
        opts = sl.sbatch_options(spec, self.defaults, "x", launch.run_dir)
        per_node = next((int(o.split("=", 1)[1]) for o in opts if o.startswith("--ntasks-per-node=")), 1)
        tasks = per_node * int((spec.get("slurm") or {}).get("nodes") or 1)
        if tasks > 1:
            env["LABDECK_SLURM_TASKS"] = str(tasks)
        name = sl.job_name(self.home, launch.job_id)
        return sl.write_script(launch.run_dir, sl.batch_script(spec, self.defaults, name, launch.run_dir, env))

    def start(self, launch: Launch) -> Handle:
        # The job's whole environment (the worker's, the home's secrets, labdeck's variables) goes
        # to sbatch itself, not into the script: secrets never land on shared storage. Slurm sets
        # the job's GPUs.
        env = {k: v for k, v in launch.env.items() if k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
        slurm_id = self.client.submit(self.script_for(launch), env=env)
        return self._track(launch.job_id, launch.run_dir, slurm_id, adopted=False)

    def _track(self, job_id: int, run_dir: Path, slurm_id: str, adopted: bool) -> Handle:
        h = Handle(job_id=job_id, run_dir=run_dir, external_id=slurm_id, adopted=adopted,
                   state=sl.SlurmJob(slurm_id, "PENDING" if not adopted else ""))
        self.live[slurm_id] = h
        self._next_poll = 0.0
        return h

    def release(self, handle: Handle, go: bool) -> None:
        if not go:
            self.client.cancel(handle.external_id)

    # ------------------------------------------------------------------ tracking

    def refresh(self) -> None:
        """ONE squeue for every live job, at most every `poll_s`."""
        mono = time.monotonic()
        if mono < self._next_poll or not self.live:
            return
        self._next_poll = mono + self.poll_s
        try:
            answer = self.client.poll(list(self.live), "labdeck-")
        except sl.SlurmError as e:  # slurmctld restarting or unreachable: keep the jobs, ask again later
            log.warning("squeue failed (%s); jobs stay as they are", e)
            return
        self.polls += 1
        for sid, got in answer.jobs.items():
            h = self.live.get(sid)
            if h is None:
                continue
            old: sl.SlurmJob = h.state
            if (got.state, got.reason, got.nodes) != (old.state, old.reason, old.nodes):
                values = {"slurm_job_id": sid, "slurm_state": got.state, "slurm_reason": got.reason,
                          "slurm_nodes": got.nodes or old.nodes}
                if got.state == "RUNNING" and old.state not in ("", "RUNNING"):  # seen starting (not adopted)
                    values["running_since"] = str(time.time())
                self.changed[h.job_id] = values
                got.nodes = got.nodes or old.nodes
                got.ended_at = old.ended_at
                h.state = got
            st: sl.SlurmJob = h.state
            if st.state in sl.TERMINAL or st.state == "UNKNOWN":
                first = st.ended_at or mono
                st.ended_at = first
                wait = self.exit_wait_s if st.state in ("COMPLETED", "FAILED") else min(3.0, self.exit_wait_s)
                if read_exit(h.run_dir) is not None or mono - first >= wait:
                    h.ended = True
                    self.live.pop(sid, None)

    def poll(self, handle: Handle) -> bool:
        if not handle.ended:
            self.refresh()
        return handle.ended

    def cancel(self, handle: Handle, grace_s: float) -> None:
        if not handle.ended:
            self.client.cancel(handle.external_id)
            self._next_poll = min(self._next_poll, time.monotonic() + 0.5)

    def stop_step(self, handle: Handle) -> bool:
        return self.poll(handle)

    def adopt(self, job_id: int, run_dir: Path, external_id: str) -> Handle | None:
        return self._track(job_id, run_dir, external_id, adopted=True)

    def exit_record(self, handle: Handle) -> dict[str, Any] | None:
        return read_exit(handle.run_dir)

    def ended_by(self, handle: Handle, stop_reason: str | None) -> outcome.Outcome | None:
        st: sl.SlurmJob | None = handle.state
        if st is None:
            return None
        rec = self.exit_record(handle)
        end = sl.end_of(st.state, st.reason, rec, stop_reason)
        if end is None:
            return None
        return outcome.Outcome(JobStatus(end.status), end.reason, end.detail, rec.get("returncode") if rec else None,
                               rec.get("signal") if rec else None)

    def forget(self, handle: Handle) -> None:
        self.live.pop(handle.external_id, None)
