"""The worker: the one daemon per home that owns the box's GPUs and runs the queue.

Started by `python -m engine.daemon` (`engine.daemon`: options, lock, daemonising). Each round,
sleeping `poll_s` between rounds (or less: a job's end wakes it through the executor):

1. **Notice changes cheaply**: `PRAGMA data_version` on one long-lived connection; only when
   another connection committed does it read commands and the queue (`db.worker_store`).
2. **Ingest** running jobs' new `events.jsonl` lines (`engine.ingest`), rows and offsets together.
3. **Watch** jobs through the executor (`engine.executors`): ended, cancel requested, time limit.
   A finished job gets its final events, its terminal status (`engine.outcome`,
   `engine.jobstate.record_end`), an automatic retry if its policy says so, and its failed
   dependents skipped, in one transaction.
4. **Schedule** (`engine.scheduler.plan`) when something changed; claim atomically; prepare the run
   folder (`engine.rundir`); start it behind the executor's gate; commit its external id; open
   the gate. So no job runs that the store does not know.
5. **Heartbeat** every `heartbeat_s`: worker row, running jobs, the GPU snapshot, WAL checkpoint.

On start it **reconciles**: a `running` job the executor can adopt is watched on from its stored
offset; one whose processes are gone is finished from its exit record, or becomes `interrupted`
(worker_lost). SIGTERM, SIGINT or SIGHUP make the worker exit at once and leave its jobs running
for the next worker; `labdeck worker stop` (graceful or `--now`) is a request in the store.
Everything a job may do wrong is contained to that job: an error in one round is logged to
`HOME/worker.log` and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import select as io_select
import signal
import socket
import sqlite3
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from db import stagerefs, worker_store
from db.home import ensure_home
from db.home import run_dir as run_dir_of
from db.models import Job, JobStatus, Worker
from db.queries import GPU_SNAPSHOT_KEY
from db.queue import (
    QUEUE_STATE_KEY,
    claim,
    set_setting,
    skip_dependents_of_failed,
)
from db.removal import sweep_deleted
from db.session import Store
from engine import attribution, hooks, ingest, outcome, process, scheduler, secrets
from engine.control import STOP_KEY
from engine.executors import Executor, Launch, local
from engine.gpus import Gpu, Inventory, SnapshotMeta, open_inventory, snapshot_json
from engine.jobstate import Config, Running, changed_log_tails, record_end, record_failed_starts
from engine.logs import RateLimited
from engine.outputs import PRIMARY_OUTPUT
from engine.rundir import LOG_FILE, cpu_job_threads, job_env, prepare_run_dir

log = logging.getLogger("labdeck.worker")



class WorkerDaemon:
    """The loop. `run()` returns when stopped; `tick()` is one round (tests drive it directly)."""

    def __init__(self, config: Config, store: Store | None = None, inventory: Inventory | None = None,
                 executor: Executor | None = None) -> None:
        self.cfg = config
        self.executor = executor or local.LocalExecutor(grace_s=config.kill_grace_s)
        self.home = ensure_home(config.home)
        self.store = store or Store(self.home)
        self.inventory = inventory or open_inventory()
        self.host = socket.gethostname()
        self.running: dict[int, Running] = {}
        self.worker_id: int | None = None
        self.queue_state = "running"
        self.stop_mode: str | None = None  # graceful | now
        self.exit_now = False
        self._watch = sqlite3.connect(self.store.path, isolation_level=None, check_same_thread=False)
        self._watch.execute("PRAGMA busy_timeout = 10000")
        self._data_version = -1
        self._fingerprint: tuple[Any, ...] = ()
        self._next_plan = self._next_heartbeat = self._next_wal_check = 0.0
        self._plan_due = True
        self._gpu_watch = attribution.GpuWatch(self.inventory)
        self._warn = RateLimited(log)
        self._unrecorded: list[tuple[Any, ...]] = []  # failed starts the store has not taken yet
        self._waiting: dict[int, str] = {}
        self._waiting_for_gpus = False
        # The worker's own LABDECK_* settings (a fake GPU file, a gate switch) are never a job's.
        self._env_base = {k: v for k, v in os.environ.items() if not k.startswith("LABDECK_")}
        self._cpu_threads = cpu_job_threads(config.cpu_slots)
        self._started = time.time()
        self.notifier = hooks.Notifier(self.home, self.store.path)  # hooks.yaml: deliveries in a thread of their own

    # ------------------------------------------------------------------ life cycle

    def register(self) -> int:
        """The worker's row; any older row still marked alive belongs to a dead worker (we hold the lock)."""
        me = process.identity(os.getpid())
        with self.store.write() as s:
            self.worker_id = worker_store.register(
                s, host=self.host, pid=os.getpid(), start=me.start_time if me else 0.0, stop_key=STOP_KEY,
                gpus=",".join(str(g) for g in sorted(self.cfg.gpus)) if self.cfg.gpus is not None else "")
        return self.worker_id

    def run(self, until: Callable[[], bool] | None = None) -> int:
        """Register, reconcile, loop until stopped; returns an exit status."""
        if self.worker_id is None:
            self.register()
        log.info("worker %s started (pid %d, gpus %s, inventory %s)", self.worker_id, os.getpid(),
                 "all" if self.cfg.gpus is None else sorted(self.cfg.gpus), self.inventory.source)
        self.reconcile()
        sweep_deleted(self.home)
        while True:
            try:
                busy = self.tick()
                if self.exit_now or (self.stop_mode is not None and not self.running):
                    break
                if until is not None and until():
                    break
                if not busy:
                    self._sleep(self.cfg.poll_s)
            except Exception:  # noqa: BLE001 - one bad round must not end the worker
                log.error("round failed:\n%s", traceback.format_exc())
                time.sleep(1.0)
                if self.exit_now:
                    break
        self.shutdown()
        return 0

    def _sleep(self, seconds: float) -> None:
        """Sleep until the next round, waking early when a job's launcher exits (its pidfd turns readable).

        So a job's end is recorded within milliseconds while the queue is still polled only every
        `poll_s`; without pidfds (old kernels) this is a plain sleep.
        """
        fds = self.executor.wake_fds([r.handle for r in self.running.values()])
        if not fds:
            time.sleep(seconds)
            return
        try:
            io_select.select(fds, [], [], seconds)
        except (OSError, ValueError):
            time.sleep(seconds)

    def shutdown(self) -> None:
        """Leave the store saying the worker stopped; jobs still running stay `running` for the next one."""
        with self.store.write() as s:
            s.execute(update(Worker).where(Worker.id == self.worker_id).values(
                stopped_at=time.time(), heartbeat_at=time.time(), state="stopped"))
        for r in self.running.values():
            self.executor.forget(r.handle)
        self.executor.close()
        self._watch.close()
        log.info("worker %s stopped; %d job(s) left running for the next worker", self.worker_id, len(self.running))

    def install_signals(self) -> None:
        def leave(signum: int, _frame: object) -> None:
            log.info("signal %d: exiting, running jobs keep running", signum)
            self.exit_now = True

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, leave)
        # Whoever started us may have ignored SIGCHLD; then the kernel reaps launchers before we
        # can learn how they ended.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    # ------------------------------------------------------------------ one round

    def _db_changed(self) -> bool:
        version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    def tick(self) -> bool:
        """One round; True if there is more work right away (do not sleep)."""
        now = time.time()
        if self._db_changed():
            if self._read_commands():
                self._plan_due = True
        self._retry_unrecorded()
        more = self._ingest()
        ended = self._watch_jobs(now)
        if ended:
            self._finish(ended)
            self._plan_due = True
        if now >= self._next_heartbeat:
            self._heartbeat(now)
            if self._waiting_for_gpus:
                self._plan_due = True  # GPUs may have been freed by someone else
        if (self._plan_due and self.queue_state == "running" and self.stop_mode is None and not self.exit_now
                and time.monotonic() >= self._next_plan):
            self._plan_due = False
            t0 = time.monotonic()
            self._schedule()
            # Every queued job is considered (a window over the head of the queue could starve a
            # runnable job behind thousands that wait), so with a huge queue a round costs tens of
            # ms; spacing rounds by their cost keeps planning under `plan_cpu_share` of a core while
            # small queues are planned at once.
            spent = time.monotonic() - t0
            self._next_plan = time.monotonic() + spent * (1 / self.cfg.plan_cpu_share - 1)
        return more

    def _read_commands(self) -> bool:
        """Read what other processes asked for (pause, stop, cancels); True if the queue changed.

        These reads run on the worker's long-lived raw connection (microseconds each, no session
        set-up): they happen after every commit by anyone, including the worker's own ingestion,
        so they must stay cheap. The queue's fingerprint (count, newest id, a priority checksum of
        the queued jobs, the queue state) decides whether a planning round is worth its cost.
        """
        cmd = worker_store.read_commands(self._watch, (QUEUE_STATE_KEY, STOP_KEY))
        self.queue_state = cmd.settings.get(QUEUE_STATE_KEY) or "running"
        stop = cmd.settings.get(STOP_KEY) or ""
        fingerprint = (self.queue_state, *cmd.fingerprint)
        if stop.startswith(f"{self.worker_id}:") and self.stop_mode is None:
            self.stop_mode = stop.split(":", 1)[1]
            log.info("stop requested (%s)", self.stop_mode)
            with self.store.write() as s:
                s.execute(update(Worker).where(Worker.id == self.worker_id).values(state="stopping"))
            if self.stop_mode == "now":
                for r in self.running.values():
                    self._stop(r, "stop_now")
        for jid in cmd.cancel_ids:
            r = self.running.get(jid)
            if r is not None and not r.stopping:
                self._stop(r, "cancel")
        changed = fingerprint != self._fingerprint
        self._fingerprint = fingerprint
        return changed

    def _stop(self, r: Running, reason: str) -> None:
        if r.stopping or self.executor.poll(r.handle):
            return  # already stopping, or it ended by itself before the request: its own outcome stands
        log.info("job %d: stopping (%s)", r.job_id, reason)
        r.stop_reason = reason
        r.stopping = True
        self.executor.cancel(r.handle, self.cfg.kill_grace_s)

    # ------------------------------------------------------------------ events

    def _ingest(self, only: list[Running] | None = None, unbounded: bool = False) -> bool:
        """Read new events of running jobs into the store; True if a bound was hit (more is waiting)."""
        jobs = only if only is not None else list(self.running.values())
        if not jobs:
            return False
        more = False
        while True:
            batch = ingest.collect([r.feed() for r in jobs if not r.events_refused])
            if batch.empty:
                return more
            with self.store.write() as s:
                ingest.write(s, batch)
            for jid, off in batch.offsets.items():
                self.running[jid].offset = off
                self.running[jid].inode = batch.inodes.get(jid, self.running[jid].inode)
            for jid in batch.refused:
                self.running[jid].events_refused = True
            for jid, n in batch.bad_lines.items():
                self._warn.warn(f"events {jid}", f"job {jid}: skipped {n} event line(s): {batch.notes.get(jid, '')}")
            hit = len(batch.metrics) >= 200_000 or batch.bytes_read >= 8 << 20
            if not unbounded:
                return hit
            more = more or hit

    # ------------------------------------------------------------------ watching

    def _watch_jobs(self, now: float) -> list[Running]:
        ended = []
        for r in list(self.running.values()):
            exited = self.executor.poll(r.handle)  # first: a job that ended on its own is not "stopped at its limit"
            if r.stopping:
                if not self.executor.stop_step(r.handle):
                    continue  # still stopping (the launcher may be gone, members of its session not)
            elif not exited and r.over_time_limit(time.monotonic()):
                self._stop(r, "time_limit")
                continue
            if exited:
                ended.append(r)
        return ended

    def _finish(self, ended: list[Running]) -> None:
        """Record the end of jobs whose launcher exited: events, status, log tail, retry, skips."""
        for r in ended:
            if not r.stopping:
                self._kill_leftovers(r)
        self._ingest(only=ended, unbounded=True)
        records = []
        for r in ended:
            tail = outcome.read_log_tail(r.run_dir / LOG_FILE)
            records.append((r, tail, self.executor.exit_record(r.handle)))
        with self.store.write() as s:
            for r, tail, rec in records:
                record_end(s, r, tail, rec, died_while_away=False,
                           ended_by=self.executor.ended_by(r.handle, r.stop_reason))
            skipped = skip_dependents_of_failed(s)
        for r in ended:
            self.running.pop(r.job_id, None)
            self.executor.forget(r.handle)
        self.notifier.ended(r.job_id for r in ended)  # returns at once, never waits for a hook
        if skipped:
            log.info("skipped %s: a dependency did not succeed", skipped)

    def _kill_leftovers(self, r: Running) -> None:
        """Stop what a finished job left behind (a background process would hold its GPU)."""
        survivors = self.executor.cleanup(r.handle)
        if survivors:
            log.warning("job %d: processes %s survived SIGKILL", r.job_id, survivors)

    # ------------------------------------------------------------------ scheduling

    def _gpus(self, max_age_s: float = 1.0) -> list[Gpu]:
        return self._gpu_watch.read(self.running.values(), max_age_s)

    def _schedule(self) -> None:
        """One planning round: read the head of the queue, plan, start what fits.

        Reads use the raw watch connection: with thousands of queued jobs an ORM round costs
        ~100 ms on a small box, these plain queries a few.
        """
        q = worker_store.read_queue(self._watch)
        rows, depends, succeeded = q.rows, q.depends, q.succeeded
        if not rows:
            self._waiting, self._waiting_for_gpus = {}, False
            return
        if q.any_bad_dependency:
            with self.store.write() as s:
                skipped = skip_dependents_of_failed(s)
            if skipped:
                log.info("skipped %s: a dependency did not succeed", skipped)
                self._plan_due = True
                return
        candidates = [
            scheduler.Candidate(id=r[0], priority=r[1], queued_at=r[2], gpus=r[3], min_free_mb=r[4],
                                share_mb=r[5], allow_foreign=bool(r[6]), depends_on=tuple(depends.get(r[0], ())))
            for r in rows
        ]
        need_gpus = any(c.gpus > 0 for c in candidates)
        views = attribution.gpu_views(self._gpus()) if need_gpus else []
        allocations = [scheduler.Allocation(r.job_id, r.gpus, r.share_mb) for r in self.running.values() if r.gpus]
        cpu_running = sum(1 for r in self.running.values() if not r.gpus)
        p = scheduler.plan(candidates, views, allocations, succeeded=succeeded, allowed=self.cfg.gpus,
                           cpu_slots=self.cfg.cpu_slots, cpu_running=cpu_running, backfill=self.cfg.backfill)
        self._waiting = p.waiting
        by_id = {c.id: c for c in candidates}
        self._waiting_for_gpus = any(by_id[j].gpus > 0 and not why.startswith("after") for j, why in p.waiting.items())
        if p.starts:
            self._start(p.starts, by_id)

    def _start(self, starts: list[scheduler.Start], by_id: dict[int, scheduler.Candidate]) -> None:
        """Claim, prepare, start behind the gate, commit the handles, open the gates."""
        claimed: list[tuple[scheduler.Start, Job, dict[str, Any]]] = []
        with self.store.write() as s:
            for st in starts:
                rd = run_dir_of(self.home, st.job_id)
                if claim(s, st.job_id, gpus=st.gpus, host=self.host, run_dir=str(rd)):
                    job = s.get(Job, st.job_id)
                    assert job is not None
                    claimed.append((st, job, stagerefs.resolve(s, self.home, st.job_id, job.spec, PRIMARY_OUTPUT)))
        spawned: list[Running] = []
        failures: list[tuple[Job, str]] = []
        for st, job, spec in claimed:
            try:
                rd = prepare_run_dir(self.home, job.id, spec)
                base = {**self._env_base, **secrets.job_environment(self.home)}  # read per job: new keys reach new jobs
                env = job_env(base, job.id, rd, st.gpus, job.gpu_mem_mb, self._cpu_threads)
                handle = self.executor.start(Launch(job_id=job.id, run_dir=rd, env=env, gpus=st.gpus))
            except Exception as e:  # noqa: BLE001 - this job could not start; the others still do
                log.error("job %d: could not start: %s", job.id, traceback.format_exc())
                failures.append((job, str(e) if isinstance(e, secrets.SecretsError)  # refused secrets.env: its one line
                                 else f"could not start the launcher: {type(e).__name__}: {e}"))
                continue
            spawned.append(Running.of(job, handle, rd, st.gpus))
        try:
            with self.store.write() as s:
                for r in spawned:
                    s.execute(update(Job).where(Job.id == r.job_id).values(pid=r.handle.pid,
                                                                           external_id=r.handle.external_id))
                self._record_spawn_failures(s, failures)
            go = True
        except Exception:  # noqa: BLE001 - the store refused: the gates stay shut, nothing runs unrecorded
            log.error("could not record started jobs; they will not run:\n%s", traceback.format_exc())
            go = False
            # Claimed but never started: recorded next round, so none stays `running` unwatched.
            self._unrecorded += [(j.id, j.kind, j.retry_max, j.retry_on, j.attempt, m) for j, m in failures]
        for r in spawned:
            # Watched either way: without `go` the launcher exits at once and writes "started": false,
            # and the job is finished like any other (interrupted, never started).
            self.running[r.job_id] = r
            self.executor.release(r.handle, go)
            if go:
                log.info("job %d: started (%s, gpus %s)", r.job_id, r.handle.external_id,
                         ",".join(map(str, r.gpus)) or "-")

    def _record_spawn_failures(self, s: Any, failures: list[Any]) -> None:
        """Jobs whose launcher could not start: failed (spawn_error), retried if their policy says so."""
        record_failed_starts(s, [(j.id, j.kind, j.retry_max, j.retry_on, j.attempt, m) for j, m in failures])

    def _retry_unrecorded(self) -> None:
        if not self._unrecorded:
            return
        with self.store.write() as s:
            record_failed_starts(s, self._unrecorded)
        self._unrecorded = []

    # ------------------------------------------------------------------ reconcile

    def reconcile(self) -> None:
        """Adopt running jobs whose launcher lives; finish the others from their exit records."""
        with self.store.read() as s:
            jobs = list(s.execute(select(Job).where(Job.status == JobStatus.running.value)).scalars())
            for j in jobs:
                s.expunge(j)  # read() ends in a rollback, which would expire attached rows
        gone: list[tuple[Running, dict[str, Any] | None]] = []
        for job in jobs:
            assert job.id is not None
            rd = Path(job.run_dir) if job.run_dir else run_dir_of(self.home, job.id)
            external_id = job.external_id or self.executor.legacy_id(job.pid, job.pid_start_time)
            handle = self.executor.adopt(job.id, rd, external_id) if external_id else None
            r = Running.of(job, handle or self.executor.gone(job.id, rd, external_id), rd,
                           tuple(int(g) for g in job.assigned_gpus.split(",") if g.strip()))
            if handle is not None:
                self.running[r.job_id] = r
                log.info("job %d: adopted (%s)", r.job_id, external_id)
                if job.cancel_requested:
                    self._stop(r, "cancel")
                continue
            if external_id:
                self._kill_leftovers(r)  # the launcher died, but something of the job may live on unwatched
            if job.cancel_requested:
                r.stop_reason = "cancel"
            gone.append((r, self.executor.exit_record(r.handle) if external_id else None))
        if not gone:
            return
        for r, _ in gone:
            self.running[r.job_id] = r
        self._ingest(only=[r for r, _ in gone], unbounded=True)
        with self.store.write() as s:
            for r, rec in gone:
                tail = outcome.read_log_tail(r.run_dir / LOG_FILE)
                if not r.handle.external_id:
                    rec = {"started": False, "detail": "the worker stopped before the job's process was started"}
                record_end(s, r, tail, rec, died_while_away=True,
                           ended_by=self.executor.ended_by(r.handle, r.stop_reason))
            skip_dependents_of_failed(s)
        for r, _ in gone:
            self.running.pop(r.job_id, None)

    # ------------------------------------------------------------------ heartbeat

    def _heartbeat(self, now: float) -> None:
        self._next_heartbeat = now + self.cfg.heartbeat_s
        gpus = self._gpus(max_age_s=0.0)
        tails = changed_log_tails(self.running.values())
        snap = snapshot_json(gpus, SnapshotMeta(
            allowed=self.cfg.gpus, source=self.inventory.source,
            extra={"waiting": {str(k): v for k, v in list(self._waiting.items())[:200]}},
        ), now)
        with self.store.write() as s:
            worker_store.heartbeat(s, self.worker_id, list(self.running), tails, now)
            set_setting(s, GPU_SNAPSHOT_KEY, snap)
        if time.monotonic() >= self._next_wal_check:
            self._next_wal_check = time.monotonic() + 30.0
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        try:
            size_mb = self.store.checkpoint_if_over(self.cfg.wal_limit_mb)
        except Exception as e:  # noqa: BLE001 - a reader held it; try again later
            log.warning("WAL checkpoint failed: %s", e)
            return
        if size_mb is not None:
            log.info("WAL was %.0f MB: checkpointed", size_mb)
