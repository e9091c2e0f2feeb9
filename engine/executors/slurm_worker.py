"""The worker with Slurm as its executor: submit, track with one squeue per poll, adopt, cancel.

Started by `engine.executors.slurm_start` (`labdeck worker start --executor slurm`).

The loop, the store, ingestion, retries and skipped dependents are the local worker's
(`engine.worker.WorkerDaemon`); only placement and process control differ, and this class replaces
exactly those parts:

* **Schedule**: every queued job whose dependencies succeeded is claimed and submitted (Slurm
  places it; labdeck keeps dependencies its own, so a stage is submitted when its upstream
  succeeded). Claim commits first, then `sbatch`, then the Slurm id is committed.
* **Crash safety**: a worker killed between sbatch and that commit leaves a `running` job without a
  Slurm id; the next worker looks it up by its job name (`labdeck-<home tag>-<id>`) before it would
  submit it again, so no job is submitted twice.
* **Track**: one `engine.executors.slurm.SlurmClient.poll` per `slurm_poll_s` for all jobs; Slurm's
  state, reason and node list go to the job row when they change. A terminal state ends the job
  once its `exit.json` is readable (waiting out NFS attribute caching for a few seconds).
* **Stop**: cancel and `stop --now` are `scancel`; the time limit is Slurm's (`--time`), with
  labdeck's own `scancel` as a backstop a minute later.
* **Adopt**: a restarted worker adopts every `running` job by its Slurm id, none lost or doubled.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from db.home import runs_root
from db.models import Job, JobStatus
from db.queue import set_setting, skip_dependents_of_failed, transition
from db.session import Store
from engine import outcome
from engine.events import EVENTS_FILE
from engine.executors import slurm as sl
from engine.launcher import LOG_FILE, SPEC_FILE, read_exit
from engine.worker import BAD_DEP_STATUSES, Config, Running, WorkerDaemon, _private_file, job_env

log = logging.getLogger("labdeck.worker")

PARTITIONS_KEY = "slurm_partitions"  # sinfo's partitions with idle/total GPUs, for the GPUs screen
# Slurm counts time limits in whole minutes and checks them about every 30 s: labdeck's own scancel
# comes only after that, in case Slurm did not (a limit it was never told, an OverTimeLimit).
BACKSTOP_S = 120.0
INFRA_REASONS = ("node_fail", "preempted")  # not the job's fault: retried at least once

@dataclass
class Tracked:
    """The Slurm side of one running job."""

    slurm_id: str | None
    name: str
    state: str = ""
    reason: str = ""
    nodes: str = ""
    ended_at: float | None = None  # monotonic time a terminal state was first seen
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SlurmConfig:
    defaults: sl.Defaults = sl.Defaults()
    slurm_poll_s: float = 2.0  # one squeue per this many seconds, whatever the number of jobs
    exit_wait_s: float = 15.0  # how long a finished job's exit.json may take to show (NFS)
    max_submit: int = 500  # submissions per round, so a huge sweep does not stall the loop
    partitions_every_s: float = 30.0


class SlurmWorker(WorkerDaemon):
    """`WorkerDaemon` with Slurm doing placement and process control."""

    def __init__(self, config: Config, slurm: SlurmConfig, store: Store | None = None,
                 client: sl.SlurmClient | None = None) -> None:
        super().__init__(config, store)
        self.scfg = slurm
        self.client = client or sl.SlurmClient()
        self.runs_root = runs_root(self.home)
        self.runs_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tracked: dict[int, Tracked] = {}
        self._next_poll = 0.0
        self._next_partitions = 0.0
        self.polls = 0

    # ------------------------------------------------------------------ helpers

    def run_dir(self, job_id: int) -> Path:
        return self.runs_root / str(job_id)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _kill_leftovers(self, r: Running) -> None:
        """Slurm ends a job's processes itself (and they run on other nodes)."""

    def _running(self, job: Job, rd: Path) -> Running:
        assert job.id is not None
        return Running(job_id=job.id, kind=job.kind, pid=0, start_time=0.0, run_dir=rd,
                       started_at=job.started_at or time.time(), time_limit_s=job.time_limit_s,
                       retry_max=job.retry_max, retry_on=json.loads(job.retry_on or "[]"), attempt=job.attempt,
                       offset=job.events_offset, ended=False)

    # ------------------------------------------------------------------ submission

    def _schedule(self) -> None:
        """Submit every queued job whose dependencies succeeded (Slurm decides where and when)."""
        db = self._watch
        rows = db.execute("SELECT id FROM job WHERE status = 'queued' AND cancel_requested = 0 "
                          "ORDER BY priority DESC, queued_at, id").fetchall()
        if not rows:
            self._waiting = {}
            return
        deps: dict[int, list[tuple[int, str]]] = {}
        for jid, dep_id, dep_status in db.execute(
                "SELECT d.job_id, d.depends_on_id, up.status FROM jobdependency d JOIN job q ON q.id = d.job_id "
                "JOIN job up ON up.id = d.depends_on_id WHERE q.status = 'queued'").fetchall():
            deps.setdefault(jid, []).append((dep_id, dep_status))
        if any(st in BAD_DEP_STATUSES for ds in deps.values() for _, st in ds):
            with self.store.write() as s:
                skip_dependents_of_failed(s)
            self._plan_due = True
        ready, waiting = [], {}
        for (jid,) in rows:
            pending = [d for d, st in deps.get(jid, []) if st != "succeeded"]
            if pending:
                waiting[jid] = f"after {','.join(map(str, pending))}"
            else:
                ready.append(jid)
        self._waiting = waiting
        if ready:
            self._submit(ready[: self.scfg.max_submit])
            if len(ready) > self.scfg.max_submit:
                self._plan_due = True

    def _submit(self, ids: list[int]) -> None:
        """Claim (commit), write the run folder and script, sbatch, commit the Slurm ids."""
        from db.queue import claim

        claimed: list[Job] = []
        with self.store.write() as s:
            for jid in ids:
                if claim(s, jid, host="slurm", run_dir=str(self.run_dir(jid))):
                    job = s.get(Job, jid)
                    assert job is not None
                    s.expunge(job)
                    claimed.append(job)
        submitted: list[tuple[Running, Tracked]] = []
        failures: list[tuple[int, str]] = []
        for job in claimed:
            assert job.id is not None
            try:
                r, t = self._sbatch(job)
                submitted.append((r, t))
            except sl.SlurmError as e:
                log.warning("job %d: sbatch refused it: %s", job.id, e)
                failures.append((job.id, f"Slurm refused the job: {e}"))
            except Exception as e:  # noqa: BLE001 - this job could not be submitted; the others still are
                log.error("job %d: could not submit: %s", job.id, traceback.format_exc())
                failures.append((job.id, f"could not submit to Slurm: {type(e).__name__}: {e}"))
        with self.store.write() as s:
            for r, t in submitted:
                s.execute(update(Job).where(Job.id == r.job_id).values(slurm_job_id=t.slurm_id, slurm_state="PENDING"))
            for jid, message in failures:
                transition(s, jid, JobStatus.failed, failure_reason="spawn_error", failure_detail=message)
            if failures:
                skip_dependents_of_failed(s)
        for r, t in submitted:
            self.running[r.job_id] = r
            self.tracked[r.job_id] = t
            log.info("job %d: submitted to Slurm as %s", r.job_id, t.slurm_id)
        if submitted:
            self._next_poll = 0.0

    def _sbatch(self, job: Job) -> tuple[Running, Tracked]:
        assert job.id is not None
        rd = self._prepare(job)
        spec = json.loads(job.spec)
        env = job_env({}, job.id, rd, (), 0.0)
        for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
            env.pop(k, None)  # Slurm sets the job's GPUs; a CPU job's script hides them
        env["LABDECK_NO_GATE"] = "1"  # Slurm's submission is the gate: the store knows the job by name
        slurm_block = spec.get("slurm") or {}
        nodes = int(slurm_block.get("nodes") or 1)
        tasks = sl.sbatch_options(spec, self.scfg.defaults, "x", rd)
        ntasks = nodes * next((int(o.split("=")[1]) for o in tasks if o.startswith("--ntasks-per-node=")), 1)
        if ntasks > 1:
            env["LABDECK_SLURM_TASKS"] = str(ntasks)
        name = sl.job_name(self.home, job.id)
        script = sl.write_script(rd, sl.batch_script(spec, self.scfg.defaults, name, rd, env))
        slurm_id = self.client.submit(script)
        return self._running(job, rd), Tracked(slurm_id, name, "PENDING")

    def _prepare(self, job: Job) -> Path:
        """The run folder under `runs_dir` (shared storage), laid out as `engine.worker.prepare_run_dir` does."""
        assert job.id is not None
        rd = self.run_dir(job.id)
        if rd.exists() and any(rd.iterdir()):
            rd.rename(rd.with_name(f"{job.id}.old-{int(time.time() * 1000)}"))
        rd.mkdir(mode=0o700, parents=True, exist_ok=True)
        spec = json.loads(job.spec)
        _private_file(rd / SPEC_FILE, (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode())
        _private_file(rd / EVENTS_FILE)
        _private_file(rd / LOG_FILE)
        (rd / "outputs").mkdir(mode=0o700, exist_ok=True)
        return rd

    # ------------------------------------------------------------------ tracking

    def _watch_jobs(self, now: float) -> list[Running]:
        """One squeue for all jobs every `slurm_poll_s`; the jobs Slurm reports ended (exit.json read)."""
        mono = time.monotonic()
        if not self.running or mono < self._next_poll:
            return []
        self._next_poll = mono + self.scfg.slurm_poll_s
        ids = [t.slurm_id for jid, t in self.tracked.items() if t.slurm_id and jid in self.running]
        try:
            poll = self.client.poll(ids, "labdeck-")
        except sl.SlurmError as e:  # slurmctld restarting or unreachable: keep the jobs, ask again later
            log.warning("squeue failed (%s); jobs stay as they are", e)
            return []
        self.polls += 1
        changed: dict[int, dict[str, str]] = {}
        ended: list[Running] = []
        for jid, t in self.tracked.items():
            r = self.running.get(jid)
            if r is None or not t.slurm_id:
                continue
            got = poll.jobs.get(t.slurm_id)
            if got is None:
                continue
            if (got.state, got.reason, got.nodes) != (t.state, t.reason, t.nodes):
                t.state, t.reason = got.state, got.reason
                t.nodes = got.nodes or t.nodes
                changed[jid] = {"slurm_state": t.state, "slurm_reason": t.reason, "slurm_nodes": t.nodes}
            if t.state in sl.TERMINAL or t.state == "UNKNOWN":
                t.ended_at = t.ended_at or mono
                if read_exit(r.run_dir) is not None or mono - t.ended_at >= self._exit_wait(t.state):
                    r.ended = True
                    ended.append(r)
            elif (r.time_limit_s is not None and r.stop_reason is None and t.state == "RUNNING"
                  and now - r.started_at > -(-r.time_limit_s // 60) * 60 + BACKSTOP_S):
                self._stop(r, "time_limit")  # backstop: Slurm should have ended it already
        if changed:
            with self.store.write() as s:
                for jid, values in changed.items():
                    s.execute(update(Job).where(Job.id == jid).values(**values))
        return ended

    def _exit_wait(self, state: str) -> float:
        """COMPLETED/FAILED jobs wrote exit.json (wait for NFS to show it); Slurm-ended ones may not have."""
        return self.scfg.exit_wait_s if state in ("COMPLETED", "FAILED") else min(3.0, self.scfg.exit_wait_s)

    def _stop(self, r: Running, reason: str) -> None:
        if r.stop_reason is not None or r.ended:
            return
        t = self.tracked.get(r.job_id)
        log.info("job %d: scancel %s (%s)", r.job_id, t.slurm_id if t else "?", reason)
        r.stop_reason = reason
        if t is not None and t.slurm_id:
            self.client.cancel(t.slurm_id)
            self._next_poll = min(self._next_poll, time.monotonic() + 0.5)

    def _finish(self, ended: list[Running]) -> None:
        super()._finish(ended)
        for r in ended:
            self.tracked.pop(r.job_id, None)

    def _record_end(self, s: Any, r: Running, tail: str, rec: dict[str, Any] | None, *, died_while_away: bool) -> None:
        t = self.tracked.get(r.job_id)
        end = sl.end_of(t.state if t else "UNKNOWN", t.reason if t else "", rec, r.stop_reason)
        if end is None:
            super()._record_end(s, r, tail, rec, died_while_away=False)
            return
        code = rec.get("returncode") if rec else None
        sig = rec.get("signal") if rec else None
        try:
            transition(s, r.job_id, JobStatus(end.status), exit_code=code, exit_signal=sig, failure_reason=end.reason,
                       failure_detail=end.detail, log_tail=tail, heartbeat_at=time.time())
        except Exception as e:  # noqa: BLE001 - IllegalTransition: someone else finished it
            log.warning("job %d: %s", r.job_id, e)
            return
        log.info("job %d: %s (%s: %s)", r.job_id, end.status, end.reason, end.detail)
        out = outcome.Outcome(JobStatus(end.status), end.reason, end.detail, code, sig)
        # A lost node or a preemption is the cluster's doing: retried once even without a policy.
        retry_max = max(r.retry_max, 1) if end.reason in INFRA_REASONS else r.retry_max
        retry_on = [*r.retry_on, *INFRA_REASONS]
        if outcome.should_retry(out, retry_on, retry_max, r.attempt):
            from db.queue import retry

            new_id = retry(s, r.job_id, reason=end.reason or "")
            log.info("job %d: retry as job %d (attempt %d)", r.job_id, new_id, r.attempt + 1)

    # ------------------------------------------------------------------ adoption

    def reconcile(self) -> None:
        """Adopt every running job by its Slurm id; one without an id is looked up by name first."""
        with self.store.read() as s:
            jobs = list(s.execute(select(Job).where(Job.status == JobStatus.running.value)).scalars())
            for j in jobs:
                s.expunge(j)
        resubmit: list[int] = []
        found: dict[int, str] = {}
        for job in jobs:
            assert job.id is not None
            rd = Path(job.run_dir) if job.run_dir else self.run_dir(job.id)
            name = sl.job_name(self.home, job.id)
            slurm_id = job.slurm_job_id
            if not slurm_id:
                hit = self.client.find_by_name(name)
                if hit is None:
                    if read_exit(rd) is None:
                        resubmit.append(job.id)  # claimed, never submitted: submit it now (once)
                        continue
                    slurm_id = ""  # ran and was purged from Slurm: its exit.json says how it ended
                else:
                    slurm_id = hit.slurm_id
                    found[job.id] = slurm_id
                    log.info("job %d: found in Slurm by name as %s (the previous worker died before recording it)",
                             job.id, slurm_id)
            r = self._running(job, rd)
            self.running[job.id] = r
            self.tracked[job.id] = Tracked(slurm_id or None, name, job.slurm_state or "", job.slurm_reason or "",
                                           job.slurm_nodes or "")
            if not slurm_id:
                self.tracked[job.id].state = "UNKNOWN"
                self.tracked[job.id].slurm_id = None
            if job.cancel_requested:
                self._stop(r, "cancel")
            log.info("job %d: adopted (Slurm job %s)", job.id, slurm_id or "-")
        with self.store.write() as s:
            for jid, slurm_id in found.items():
                s.execute(update(Job).where(Job.id == jid).values(slurm_job_id=slurm_id))
            if resubmit:  # back to the queue so the normal path claims and submits them
                s.execute(update(Job).where(Job.id.in_(resubmit)).values(status="queued", started_at=None))
        # Jobs with no Slurm id but an exit record end at the first round.
        lost = [r for jid, r in self.running.items() if self.tracked[jid].slurm_id is None]
        if lost:
            for r in lost:
                r.ended = True
            self._finish(lost)
        self._next_poll = 0.0

    # ------------------------------------------------------------------ heartbeat

    def _heartbeat(self, now: float) -> None:
        super()._heartbeat(now)
        if time.monotonic() >= self._next_partitions:
            self._next_partitions = time.monotonic() + self.scfg.partitions_every_s
            try:
                parts = self.client.partitions()
            except sl.SlurmError as e:
                log.warning("sinfo failed: %s", e)
                return
            with self.store.write() as s:
                set_setting(s, PARTITIONS_KEY, json.dumps({"at": now, "partitions": parts}))
