"""The worker with Slurm as its executor (`labdeck worker start --executor slurm`).

The loop, the store, ingestion, retries and skipped dependents are the local worker's
(`engine.worker.WorkerDaemon`), and process control is `SlurmExecutor` behind the executor seam.
This subclass changes only what a cluster changes about the loop:

* **Schedule**: no GPU placement here (Slurm places jobs); every queued job whose dependencies
  succeeded is claimed and submitted, at most `max_submit` a round. Dependencies stay labdeck's:
  a stage is submitted when its upstream succeeded.
* **Crash safety**: a worker killed between sbatch and the commit of the Slurm id leaves a
  `running` job without one; the next worker looks it up by its job name (`labdeck-<home tag>-<id>`)
  before anything else, adopts it if Slurm has it, and queues it again only if Slurm never saw it
  and it left no exit record. No job is submitted twice.
* **The Slurm side in the store**: state, reason and node list are written when a poll finds them
  changed (so `ls`, `show` and the app show PENDING (Resources) apart from labdeck's own queue);
  `started_at` becomes the moment Slurm started the job.
* **Time limits are Slurm's** (`--time`, which counts whole minutes and is checked about every
  30 s): labdeck's own scancel is a backstop `BACKSTOP_S` later, counted from when Slurm started it.
* **Partitions**: `sinfo` every `partitions_every_s` for the GPUs screen.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from db import worker_store
from db.home import run_dir as run_dir_of
from db.models import Job, JobStatus
from db.queries import SLURM_PARTITIONS_KEY as PARTITIONS_KEY  # sinfo's partitions, for the GPUs screen
from db.queue import set_setting, skip_dependents_of_failed
from db.session import Store
from engine import scheduler
from engine.executors import slurm as sl
from engine.executors.slurm_executor import SlurmExecutor
from engine.launcher import read_exit
from engine.worker import Config, WorkerDaemon

log = logging.getLogger("labdeck.worker")


BACKSTOP_S = 120.0


@dataclass
class SlurmConfig:
    defaults: sl.Defaults = sl.Defaults()
    slurm_poll_s: float = 2.0  # one squeue per this many seconds, whatever the number of jobs
    exit_wait_s: float = 15.0  # how long a finished job's exit.json may take to show (NFS)
    max_submit: int = 32  # sbatch calls per round (~0.1 s each), so a big sweep never stalls cancels and ingestion
    partitions_every_s: float = 30.0


class SlurmWorker(WorkerDaemon):
    """`WorkerDaemon` with `SlurmExecutor`, Slurm's placement, and the Slurm columns kept current."""

    def __init__(self, config: Config, slurm: SlurmConfig, store: Store | None = None,
                 client: sl.SlurmClient | None = None) -> None:
        executor = SlurmExecutor(config.home, slurm.defaults, client, slurm.slurm_poll_s, slurm.exit_wait_s)
        super().__init__(config, store, executor=executor)
        self.scfg = slurm
        self.sx = executor
        self.client = executor.client
        self._limits: dict[int, float | None] = {}  # the spec's time limits, applied once Slurm runs the job
        self._next_partitions = 0.0

    @property
    def polls(self) -> int:
        return self.sx.polls

    def run_dir(self, job_id: int):  # type: ignore[no-untyped-def]
        return run_dir_of(self.home, job_id)

    # ------------------------------------------------------------------ scheduling

    def _schedule(self) -> None:
        """Submit every queued job whose dependencies succeeded (Slurm decides where and when)."""
        q = worker_store.read_queue(self._watch)
        if not q.rows:
            self._waiting = {}
            return
        if q.any_bad_dependency:
            with self.store.write() as s:
                skip_dependents_of_failed(s)
            self._plan_due = True
            return
        ready, waiting = [], {}
        for row in q.rows:
            pending = [d for d in q.depends.get(row[0], ()) if d not in q.succeeded]
            if pending:
                waiting[row[0]] = f"after {','.join(map(str, pending))}"
            else:
                ready.append(row[0])
        self._waiting = waiting
        if len(ready) > self.scfg.max_submit:
            ready = ready[: self.scfg.max_submit]
            self._plan_due = True
        if ready:
            self._start([scheduler.Start(jid, ()) for jid in ready], {})

    # ------------------------------------------------------------------ tracking

    def _watch_jobs(self, now: float) -> list[Any]:
        for jid, r in self.running.items():
            if jid not in self._limits:  # Slurm enforces the limit; labdeck's backstop waits for RUNNING
                self._limits[jid] = limit = r.time_limit_s
                # An adopted job keeps its stored start (Slurm's, or the claim if it never ran).
                r.time_limit_s = -(-limit // 60) * 60 + BACKSTOP_S if limit and r.handle.adopted else None
        ended = super()._watch_jobs(now)
        if self.sx.changed:
            changed, self.sx.changed = self.sx.changed, {}
            with self.store.write() as s:
                for jid, values in changed.items():
                    since = values.pop("running_since", None)
                    r = self.running.get(jid)
                    if since is not None and r is not None:
                        r.started_at = float(since)
                        values["started_at"] = since
                        limit = self._limits.get(jid)
                        if limit:
                            r.time_limit_s = -(-limit // 60) * 60 + BACKSTOP_S
                    s.execute(update(Job).where(Job.id == jid, Job.status == JobStatus.running.value).values(**values))
        for r in ended:
            self._limits.pop(r.job_id, None)
        return ended

    # ------------------------------------------------------------------ adoption

    def reconcile(self) -> None:
        """Find running jobs that have no Slurm id by name first; then adopt all by id."""
        with self.store.read() as s:
            orphans = [(j.id, j.run_dir) for j in s.execute(select(Job).where(
                Job.status == JobStatus.running.value, Job.external_id == "")).scalars()]
        found: dict[int, str] = {}
        requeue: list[int] = []
        for jid, rd in orphans:
            hit = self.client.find_by_name(sl.job_name(self.home, jid))
            if hit is not None:
                found[jid] = hit.slurm_id
                log.info("job %d: found in Slurm by name as %s (the previous worker died before recording it)",
                         jid, hit.slurm_id)
            elif read_exit(rd or self.run_dir(jid)) is None:
                requeue.append(jid)  # claimed, never submitted: the normal path submits it (once)
        if found or requeue:
            with self.store.write() as s:
                for jid, sid in found.items():
                    s.execute(update(Job).where(Job.id == jid).values(external_id=sid, slurm_job_id=sid))
                if requeue:
                    s.execute(update(Job).where(Job.id.in_(requeue), Job.status == JobStatus.running.value)
                              .values(status=JobStatus.queued.value, started_at=None))
        super().reconcile()

    # ------------------------------------------------------------------ heartbeat

    def _heartbeat(self, now: float) -> None:
        super()._heartbeat(now)
        if time.monotonic() < self._next_partitions:
            return
        self._next_partitions = time.monotonic() + self.scfg.partitions_every_s
        try:
            parts = self.client.partitions()
        except sl.SlurmError as e:
            log.warning("sinfo failed: %s", e)
            return
        with self.store.write() as s:
            set_setting(s, PARTITIONS_KEY, json.dumps({"at": now, "partitions": parts}))
