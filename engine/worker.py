"""The worker: the one daemon per home that owns the box's GPUs and runs the queue.

`python -m engine.worker --home HOME [--gpus 0,2] [--detach]` (usually through `labdeck worker
start`, or started on demand by `labdeck submit` and the app).

What it does, in a loop that sleeps `poll_s` between rounds:

1. **Notice changes cheaply.** `PRAGMA data_version` on one long-lived connection tells whether any
   other connection committed since the last look (a submit, a cancel, a pause). Only then does
   the worker read the queue, so an idle worker costs a few microseconds a round and well under
   1% of a core.
2. **Ingest** each running job's new `events.jsonl` lines (see `engine.ingest`): all jobs' rows
   and their new offsets in one transaction.
3. **Watch** the jobs: a launcher that exited (its `exit.json` says how the command ended), a
   cancel request, a time limit; stopping is SIGTERM to the job's session, a grace period, SIGKILL
   (`engine.process.JobStopper`, non-blocking). A finished job gets its final events, its terminal
   status and reason (`engine.outcome`), the last log lines, an automatic retry if its policy says
   so, and its failed dependents skipped: all in one transaction.
4. **Schedule** (`engine.scheduler.plan`) when the queue changed, a job ended, or GPUs changed
   while GPU jobs wait; claim atomically (`db.queue.claim`); write the run folder; spawn the
   launcher behind its start gate; commit its pid and start time; then open the gate.
5. **Heartbeat** every `heartbeat_s`: the worker row, the running jobs, the GPU snapshot the CLI
   and TUI read (`db.queries.GPU_SNAPSHOT_KEY`), and a WAL checkpoint when the WAL has grown.

On start it **reconciles**: a `running` job whose launcher still lives (same pid *and* start time)
is adopted and its events read on from the stored offset; one whose launcher is gone is finished
from its `exit.json`, or becomes `interrupted` (worker_lost) if it left none. Nothing is restarted
silently: a retry happens only when the job's own policy names the reason.

Stopping: `labdeck worker stop` lets running jobs finish and starts nothing new; `--now` cancels
them first. SIGTERM, SIGINT or SIGHUP make the worker exit at once and leave its jobs running;
the next worker adopts them (this is how a restart or an upgrade works without losing a job).

Everything a job may do wrong (crash, garbage events, not starting) is contained to that job: an
error in one round is logged to `HOME/worker.log` and the loop goes on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select as io_select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import and_, select, update

from db.home import ensure_home
from db.home import run_dir as run_dir_of
from db.models import Job, JobStatus, Worker
from db.queries import GPU_SNAPSHOT_KEY
from db.queue import (
    QUEUE_STATE_KEY,
    IllegalTransition,
    claim,
    get_setting,
    retry,
    set_setting,
    skip_dependents_of_failed,
    transition,
)
from db.session import Store
from engine import ingest, outcome, process, scheduler
from engine.control import GPUS_KEY, STOP_KEY, WorkerLock, log_path
from engine.events import ENV_EVENTS, ENV_JOB_ID, ENV_RUN_DIR, EVENTS_FILE
from engine.gpus import Gpu, Inventory, SnapshotMeta, classify, open_inventory, snapshot_json
from engine.launcher import LOG_FILE, SPEC_FILE, read_exit

log = logging.getLogger("labdeck.worker")

ENV_GPU_MEM_MB = "LABDECK_GPU_MEM_MB"
BAD_DEP_STATUSES = ("failed", "cancelled", "interrupted", "skipped")


@dataclass
class Config:
    home: Path
    gpus: frozenset[int] | None = None  # None: every GPU found
    poll_s: float = 0.2
    heartbeat_s: float = 3.0
    kill_grace_s: float = 10.0
    cpu_slots: int | None = None  # concurrent CPU-only jobs; None: no limit
    backfill: bool = False
    wal_limit_mb: float = 64.0
    plan_cpu_share: float = 0.2  # planning may use at most about this share of a core (big queues)


@dataclass
class Running:
    """A job this worker watches: started by it, or adopted from a previous worker."""

    job_id: int
    kind: str
    pid: int
    start_time: float
    run_dir: Path
    started_at: float  # wall clock, from the store
    gpus: tuple[int, ...] = ()
    share_mb: float = 0.0
    time_limit_s: float | None = None
    retry_max: int = 0
    retry_on: list[str] = field(default_factory=list)
    attempt: int = 1
    popen: subprocess.Popen[bytes] | None = None  # None when adopted
    proc: psutil.Process | None = None  # for adopted launchers
    offset: int = 0
    stopper: process.JobStopper | None = None
    stop_reason: str | None = None  # cancel | time_limit | stop_now
    log_size: int = -1
    launcher_rc: int | None = None
    ended: bool = False
    pidfd: int | None = None  # readable once the launcher exits: wakes the worker at once

    def open_pidfd(self) -> None:
        """A pidfd for the launcher (Linux >= 5.3), checked against its start time after opening."""
        if not hasattr(os, "pidfd_open") or self.pidfd is not None:
            return
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            return
        if self.popen is None and not process.is_alive(self.pid, self.start_time):
            os.close(fd)  # the pid was reused between the check and the open
            return
        self.pidfd = fd

    def close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    @property
    def adopted(self) -> bool:
        return self.popen is None

    def exited(self) -> bool:
        """True once the launcher process is gone (reaped if it is our child)."""
        if self.ended:
            return True
        if self.popen is not None:
            rc = self.popen.poll()
            if rc is None:
                return False
            self.launcher_rc = rc
        else:
            try:
                assert self.proc is not None
                if self.proc.is_running() and self.proc.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                pass
        self.ended = True
        return True

    def feed(self) -> ingest.Feed:
        return ingest.Feed(self.job_id, self.run_dir / EVENTS_FILE, self.offset, self.run_dir)


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. a cgroup cpuset or `taskset`)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_job_threads(slots: int | None, cpus: int | None = None) -> int | None:
    """Threads for each CPU-only job: the CPUs shared out among the CPU slots, at least 1.

    torch (OpenMP/MKL) otherwise starts one thread per core in every job, and two CPU jobs on two
    cores then fight over them (the tiny ExPO recipe on a quiet 2-core box: 72 s, 38 s with the
    cap). None when the slots are unlimited: nothing to share out.
    """
    if not slots:
        return None
    return max(1, (cpus if cpus is not None else usable_cpus()) // slots)


def job_env(base: dict[str, str], job_id: int, run_dir: Path, gpus: tuple[int, ...], share_mb: float,
            cpu_threads: int | None = None) -> dict[str, str]:
    """The environment a job starts with: the worker's own, plus where to report and which GPUs.

    A CPU-only job also gets OMP_NUM_THREADS and MKL_NUM_THREADS = `cpu_threads`, unless the
    worker's environment sets them (a command job's own `env` is applied later by the launcher and
    wins over both).
    """
    env = dict(base)
    if not gpus and cpu_threads:
        for var in THREAD_VARS:
            env.setdefault(var, str(cpu_threads))
    env.update({
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in gpus),  # "" hides every GPU from a CPU job
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA numbers cards as NVML does
        ENV_EVENTS: str(run_dir / EVENTS_FILE),
        ENV_RUN_DIR: str(run_dir),
        ENV_JOB_ID: str(job_id),
        "PYTHONUNBUFFERED": "1",
    })
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if share_mb > 0:
        env[ENV_GPU_MEM_MB] = str(int(share_mb))
    else:
        env.pop(ENV_GPU_MEM_MB, None)
    return env


def _private_file(path: Path, content: bytes = b"") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if content:
            os.write(fd, content)
    finally:
        os.close(fd)


def prepare_run_dir(home: Path, job_id: int, spec_json: str) -> Path:
    """Create `runs/<id>/` (0700) with spec.json, an empty events.jsonl and log.txt, and outputs/.

    A folder left by an earlier database with the same job id is moved aside, never mixed in.
    """
    rd = run_dir_of(home, job_id)
    if rd.exists() and any(rd.iterdir()):
        rd.rename(rd.with_name(f"{job_id}.old-{int(time.time() * 1000)}"))
    rd.mkdir(mode=0o700, parents=True, exist_ok=True)
    spec = json.loads(spec_json)
    _private_file(rd / SPEC_FILE, (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode())
    _private_file(rd / EVENTS_FILE)
    _private_file(rd / LOG_FILE)
    (rd / "outputs").mkdir(mode=0o700, exist_ok=True)
    return rd


class WorkerDaemon:
    """The loop. `run()` returns when stopped; `tick()` is one round (tests drive it directly)."""

    def __init__(self, config: Config, store: Store | None = None, inventory: Inventory | None = None) -> None:
        self.cfg = config
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
        self._next_plan = 0.0
        self._next_heartbeat = 0.0
        self._next_wal_check = 0.0
        self._plan_due = True
        self._gpu_cache: tuple[float, list[Gpu]] = (0.0, [])
        self._waiting: dict[int, str] = {}
        self._waiting_for_gpus = False
        self._env_base = {k: v for k, v in os.environ.items() if k not in ("LABDECK_FAKE_GPUS",)}
        self._cpu_threads = cpu_job_threads(config.cpu_slots)
        self._started = time.time()

    # ------------------------------------------------------------------ life cycle

    def register(self) -> int:
        """The worker's row; any older row still marked alive belongs to a dead worker (we hold the lock)."""
        now = time.time()
        me = process.identity(os.getpid())
        with self.store.write() as s:
            s.execute(update(Worker).where(Worker.stopped_at.is_(None)).values(stopped_at=now, state="stopped"))
            w = Worker(host=self.host, pid=os.getpid(), pid_start_time=me.start_time if me else now,
                       started_at=now, heartbeat_at=now, state="running",
                       gpus=",".join(str(g) for g in sorted(self.cfg.gpus)) if self.cfg.gpus is not None else "")
            s.add(w)
            s.flush()
            assert w.id is not None
            self.worker_id = w.id
            # A stop request addressed to an earlier worker is void.
            if get_setting(s, STOP_KEY, ""):
                set_setting(s, STOP_KEY, "")
        return self.worker_id

    def run(self, until: Callable[[], bool] | None = None) -> int:
        """Register, reconcile, loop until stopped; returns an exit status."""
        if self.worker_id is None:
            self.register()
        log.info("worker %s started (pid %d, gpus %s, inventory %s)", self.worker_id, os.getpid(),
                 "all" if self.cfg.gpus is None else sorted(self.cfg.gpus), self.inventory.source)
        self.reconcile()
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
        # A launcher already known to have exited (its session still being stopped) would keep
        # its pidfd readable and turn this into a busy loop: leave it out.
        fds = [r.pidfd for r in self.running.values() if r.pidfd is not None and not r.ended]
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
            if r.popen is not None and r.popen.stdin is not None:
                r.popen.stdin.close()
        self._watch.close()
        log.info("worker %s stopped; %d job(s) left running for the next worker", self.worker_id, len(self.running))

    def install_signals(self) -> None:
        def leave(signum: int, _frame: object) -> None:
            log.info("signal %d: exiting, running jobs keep running", signum)
            self.exit_now = True

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, leave)

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
        db = self._watch
        settings = dict(db.execute("SELECT key, value FROM setting WHERE key IN (?, ?)",
                                   (QUEUE_STATE_KEY, STOP_KEY)).fetchall())
        self.queue_state = settings.get(QUEUE_STATE_KEY) or "running"
        stop = settings.get(STOP_KEY) or ""
        cancel_ids = [r[0] for r in db.execute(
            "SELECT id FROM job WHERE status = 'running' AND cancel_requested = 1").fetchall()]
        fingerprint = (self.queue_state, *db.execute(
            "SELECT count(*), max(id), total(priority * id) FROM job WHERE status = 'queued' AND cancel_requested = 0"
        ).fetchone())
        if stop.startswith(f"{self.worker_id}:") and self.stop_mode is None:
            self.stop_mode = stop.split(":", 1)[1]
            log.info("stop requested (%s)", self.stop_mode)
            with self.store.write() as s:
                s.execute(update(Worker).where(Worker.id == self.worker_id).values(state="stopping"))
            if self.stop_mode == "now":
                for r in self.running.values():
                    self._stop(r, "stop_now")
        for jid in cancel_ids:
            r = self.running.get(jid)
            if r is not None and r.stopper is None:
                self._stop(r, "cancel")
        changed = fingerprint != self._fingerprint
        self._fingerprint = fingerprint
        return changed

    def _stop(self, r: Running, reason: str) -> None:
        if r.stopper is not None or r.exited():
            return  # already stopping, or it ended by itself before the request: its own outcome stands
        log.info("job %d: stopping (%s)", r.job_id, reason)
        r.stop_reason = reason
        r.stopper = process.JobStopper(r.pid, self.cfg.kill_grace_s, str(r.run_dir))

    # ------------------------------------------------------------------ events

    def _ingest(self, only: list[Running] | None = None, unbounded: bool = False) -> bool:
        """Read new events of running jobs into the store; True if a bound was hit (more is waiting)."""
        jobs = only if only is not None else list(self.running.values())
        if not jobs:
            return False
        more = False
        while True:
            batch = ingest.collect([r.feed() for r in jobs])
            if batch.empty:
                return more
            with self.store.write() as s:
                ingest.write(s, batch)
            for jid, off in batch.offsets.items():
                self.running[jid].offset = off
            for jid, n in batch.bad_lines.items():
                log.warning("job %d: %d event line(s) were not valid events", jid, n)
            hit = len(batch.metrics) >= 200_000 or batch.bytes_read >= 8 << 20
            if not unbounded:
                return hit
            more = more or hit

    # ------------------------------------------------------------------ watching

    def _watch_jobs(self, now: float) -> list[Running]:
        ended = []
        for r in list(self.running.values()):
            exited = r.exited()  # first: a job that ended on its own is not "stopped at its limit"
            if r.stopper is not None:
                if not r.stopper.step():
                    continue  # still stopping (the launcher may be gone, members of its session not)
            elif not exited and r.time_limit_s is not None and now - r.started_at > r.time_limit_s:
                self._stop(r, "time_limit")
                continue
            if exited:
                ended.append(r)
        return ended

    def _finish(self, ended: list[Running]) -> None:
        """Record the end of jobs whose launcher exited: events, status, log tail, retry, skips."""
        for r in ended:
            if r.stopper is None:
                self._kill_leftovers(r)
        self._ingest(only=ended, unbounded=True)
        records = []
        for r in ended:
            tail = outcome.read_log_tail(r.run_dir / LOG_FILE)
            records.append((r, tail, read_exit(r.run_dir)))
        with self.store.write() as s:
            for r, tail, rec in records:
                self._record_end(s, r, tail, rec, died_while_away=False)
            skipped = skip_dependents_of_failed(s)
        for r in ended:
            self.running.pop(r.job_id, None)
            r.close_pidfd()
            if r.popen is not None and r.popen.stdin is not None:
                r.popen.stdin.close()
        if skipped:
            log.info("skipped %s: a dependency did not succeed", skipped)

    def _kill_leftovers(self, r: Running) -> None:
        """Stop what a finished job left behind (a background process would hold its GPU)."""
        left = process.leftovers(r.pid, str(r.run_dir))
        if left:
            log.info("job %d: stopping %d leftover process(es) %s", r.job_id, len(left), left)
            survivors = process.kill_pids(left, grace_s=min(2.0, self.cfg.kill_grace_s))
            if survivors:
                log.warning("job %d: processes %s survived SIGKILL", r.job_id, survivors)

    def _record_end(self, s: Any, r: Running, tail: str, rec: dict[str, Any] | None, *, died_while_away: bool) -> None:
        row = s.get(Job, r.job_id)
        reported = (row.failure_reason, row.failure_detail) if row is not None and row.failure_reason else None
        out = outcome.classify(
            kind=r.kind, exit_record=rec, launcher_returncode=r.launcher_rc, stop_reason=r.stop_reason,
            reported_error=reported, log_tail=tail, died_while_away=died_while_away,
        )
        if r.stopper is not None and r.stopper.survivors:
            out = outcome.Outcome(out.status, out.reason,
                                  out.detail + f"; processes {r.stopper.survivors} survived SIGKILL",
                                  out.exit_code, out.exit_signal)
        try:
            transition(s, r.job_id, out.status, exit_code=out.exit_code, exit_signal=out.exit_signal,
                       failure_reason=out.reason, failure_detail=out.detail, log_tail=tail,
                       heartbeat_at=time.time())
        except IllegalTransition as e:
            log.warning("job %d: %s", r.job_id, e)
            return
        log.info("job %d: %s%s", r.job_id, out.status.value, f" ({out.reason}: {out.detail})" if out.reason else "")
        if outcome.should_retry(out, r.retry_on, r.retry_max, r.attempt):
            new_id = retry(s, r.job_id, reason=out.reason or "")  # queued dependents follow the new attempt
            log.info("job %d: retry as job %d (attempt %d)", r.job_id, new_id, r.attempt + 1)

    # ------------------------------------------------------------------ scheduling

    def _gpus(self, max_age_s: float = 1.0) -> list[Gpu]:
        t, gpus = self._gpu_cache
        if time.monotonic() - t > max_age_s:
            try:
                gpus = self.inventory.read()
            except Exception:  # noqa: BLE001 - NVML hiccup: treat as no information this round
                log.warning("GPU inventory failed:\n%s", traceback.format_exc())
                gpus = []
            gpus = classify(gpus, self._pid_to_job(), self._job_of_pid)
            self._gpu_cache = (time.monotonic(), gpus)
        return gpus

    def _pid_to_job(self) -> dict[int, int]:
        return {r.pid: r.job_id for r in self.running.values()}

    def _job_of_pid(self, pid: int) -> int | None:
        """The job a GPU process belongs to: its session leader is a job's launcher, or its environment says so."""
        by_launcher = self._pid_to_job()
        try:
            sid = os.getsid(pid)
            if sid in by_launcher:
                return by_launcher[sid]
            pgid = os.getpgid(pid)
            if pgid in by_launcher:
                return by_launcher[pgid]
        except (ProcessLookupError, PermissionError):
            return None
        try:
            env = psutil.Process(pid).environ()
            jid = int(env.get(ENV_JOB_ID, ""))
            if jid in self.running and env.get(ENV_RUN_DIR) == str(self.running[jid].run_dir):
                return jid
        except (psutil.Error, ValueError, OSError):
            pass
        return None

    def _gpu_views(self, gpus: list[Gpu]) -> list[scheduler.GpuView]:
        views = []
        for g in gpus:
            ours: dict[int, float] = {}
            foreign = False
            for p in g.processes:
                if p.job_id is None:
                    foreign = True
                else:
                    ours[p.job_id] = ours.get(p.job_id, 0.0) + p.mem_mb
            views.append(scheduler.GpuView(g.index, g.mem_total_mb, g.mem_used_mb, foreign, ours))
        return views

    def _schedule(self) -> None:
        """One planning round: read the head of the queue, plan, start what fits.

        Reads use the raw watch connection: with thousands of queued jobs an ORM round costs
        ~100 ms on a small box, these plain queries a few.
        """
        db = self._watch
        rows = db.execute(
            "SELECT id, priority, queued_at, gpus_requested, min_free_mem_mb, gpu_mem_mb, allow_foreign FROM job "
            "WHERE status = 'queued' AND cancel_requested = 0 ORDER BY priority DESC, queued_at, id"
        ).fetchall()
        if not rows:
            self._waiting, self._waiting_for_gpus = {}, False
            return
        deps = db.execute(
            "SELECT d.job_id, d.depends_on_id, up.status FROM jobdependency d "
            "JOIN job q ON q.id = d.job_id JOIN job up ON up.id = d.depends_on_id "
            "WHERE q.status = 'queued'"
        ).fetchall()
        depends: dict[int, list[int]] = {}
        succeeded: set[int] = set()
        bad = False
        for jid, dep_id, dep_status in deps:
            depends.setdefault(jid, []).append(dep_id)
            if dep_status == "succeeded":
                succeeded.add(dep_id)
            elif dep_status in BAD_DEP_STATUSES:
                bad = True
        if bad:
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
        views = self._gpu_views(self._gpus()) if need_gpus else []
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
        """Claim, prepare, spawn behind the gate, commit the pids, open the gates."""
        claimed: list[tuple[scheduler.Start, Job]] = []
        with self.store.write() as s:
            for st in starts:
                rd = run_dir_of(self.home, st.job_id)
                if claim(s, st.job_id, gpus=st.gpus, host=self.host, run_dir=str(rd)):
                    job = s.get(Job, st.job_id)
                    assert job is not None
                    claimed.append((st, job))
        spawned: list[tuple[Running, subprocess.Popen[bytes]]] = []
        failures: list[tuple[int, str]] = []
        for st, job in claimed:
            try:
                rd = prepare_run_dir(self.home, job.id, job.spec)
                env = job_env(self._env_base, job.id, rd, st.gpus, job.gpu_mem_mb, self._cpu_threads)
                log_fd = os.open(rd / LOG_FILE, os.O_WRONLY | os.O_APPEND)
                try:
                    popen = process.spawn([sys.executable, "-m", "engine.launcher", str(rd)], cwd=rd, env=env,
                                          stdout=log_fd, stdin=subprocess.PIPE)
                finally:
                    os.close(log_fd)
                ident = process.identity(popen.pid)
                start_time = ident.start_time if ident else time.time()
            except Exception as e:  # noqa: BLE001 - this job could not start; the others still do
                log.error("job %d: could not start: %s", job.id, traceback.format_exc())
                failures.append((job.id, f"could not start the launcher: {type(e).__name__}: {e}"))
                continue
            r = Running(
                job_id=job.id, kind=job.kind, pid=popen.pid, start_time=start_time, run_dir=rd,
                started_at=job.started_at or time.time(), gpus=st.gpus, share_mb=float(job.gpu_mem_mb or 0),
                time_limit_s=job.time_limit_s, retry_max=job.retry_max, retry_on=json.loads(job.retry_on or "[]"),
                attempt=job.attempt, popen=popen,
            )
            spawned.append((r, popen))
        try:
            with self.store.write() as s:
                for r, _ in spawned:
                    s.execute(update(Job).where(Job.id == r.job_id).values(pid=r.pid, pid_start_time=r.start_time))
                for job_id, message in failures:
                    try:
                        transition(s, job_id, JobStatus.failed, failure_reason="spawn_error", failure_detail=message)
                    except IllegalTransition as e:
                        log.warning("job %d: %s", job_id, e)
                if failures:
                    skip_dependents_of_failed(s)
            go = True
        except Exception:  # noqa: BLE001 - the store refused: the gates stay shut, nothing runs unrecorded
            log.error("could not record started jobs; they will not run:\n%s", traceback.format_exc())
            go = False
        for r, popen in spawned:
            # Watched either way: without `go` the launcher exits at once and writes "started": false,
            # and the job is finished like any other (interrupted, never started).
            self.running[r.job_id] = r
            r.open_pidfd()
            try:
                assert popen.stdin is not None
                if go:
                    popen.stdin.write(b"go\n")
                    popen.stdin.flush()
                popen.stdin.close()
            except (BrokenPipeError, OSError):
                pass  # the launcher already died; its exit is handled like any other
            if go:
                log.info("job %d: started (pid %d, gpus %s)", r.job_id, r.pid, ",".join(map(str, r.gpus)) or "-")

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
            r = Running(
                job_id=job.id, kind=job.kind, pid=job.pid or 0, start_time=job.pid_start_time or 0.0, run_dir=rd,
                started_at=job.started_at or time.time(),
                gpus=tuple(int(g) for g in job.assigned_gpus.split(",") if g.strip()),
                share_mb=float(job.gpu_mem_mb or 0), time_limit_s=job.time_limit_s, retry_max=job.retry_max,
                retry_on=json.loads(job.retry_on or "[]"), attempt=job.attempt, offset=job.events_offset,
            )
            if job.pid and process.is_alive(job.pid, job.pid_start_time):
                try:
                    r.proc = psutil.Process(job.pid)
                except psutil.NoSuchProcess:
                    r.proc = None
            if r.proc is not None:
                self.running[r.job_id] = r
                r.open_pidfd()
                log.info("job %d: adopted (pid %d)", r.job_id, r.pid)
                if job.cancel_requested:
                    self._stop(r, "cancel")
                continue
            r.ended = True
            if job.pid:
                self._kill_leftovers(r)  # the launcher died, but something of the job may live on unwatched
            if job.cancel_requested:
                r.stop_reason = "cancel"
            gone.append((r, read_exit(rd) if job.pid else None))
        if not gone:
            return
        for r, _ in gone:
            self.running[r.job_id] = r
        self._ingest(only=[r for r, _ in gone], unbounded=True)
        with self.store.write() as s:
            for r, rec in gone:
                tail = outcome.read_log_tail(r.run_dir / LOG_FILE)
                if r.pid == 0:
                    rec = {"started": False, "detail": "the worker stopped before the job's process was started"}
                self._record_end(s, r, tail, rec, died_while_away=True)
            skip_dependents_of_failed(s)
        for r, _ in gone:
            self.running.pop(r.job_id, None)

    # ------------------------------------------------------------------ heartbeat

    def _heartbeat(self, now: float) -> None:
        self._next_heartbeat = now + self.cfg.heartbeat_s
        gpus = self._gpus(max_age_s=0.0)
        tails = {}
        for r in self.running.values():
            try:
                size = (r.run_dir / LOG_FILE).stat().st_size
            except OSError:
                continue
            if size != r.log_size:
                r.log_size = size
                tails[r.job_id] = outcome.read_log_tail(r.run_dir / LOG_FILE)
        snap = snapshot_json(gpus, SnapshotMeta(
            allowed=self.cfg.gpus, source=self.inventory.source,
            extra={"waiting": {str(k): v for k, v in list(self._waiting.items())[:200]}},
        ), now)
        with self.store.write() as s:
            s.execute(update(Worker).where(Worker.id == self.worker_id).values(heartbeat_at=now))
            if self.running:
                s.execute(update(Job).where(and_(Job.id.in_(list(self.running)),
                                                 Job.status == JobStatus.running.value)).values(heartbeat_at=now))
            for jid, tail in tails.items():
                s.execute(update(Job).where(Job.id == jid).values(log_tail=tail))
            set_setting(s, GPU_SNAPSHOT_KEY, snap)
        if time.monotonic() >= self._next_wal_check:
            self._next_wal_check = time.monotonic() + 30.0
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        wal = Path(f"{self.store.path}-wal")
        try:
            size_mb = wal.stat().st_size / 2**20
        except OSError:
            return
        if size_mb > self.cfg.wal_limit_mb:
            try:
                self.store.checkpoint()
                log.info("WAL was %.0f MB: checkpointed", size_mb)
            except Exception as e:  # noqa: BLE001 - a reader held it; try again later
                log.warning("WAL checkpoint failed: %s", e)


# ---------------------------------------------------------------------- entry point


def parse_gpus(text: str | None) -> frozenset[int] | None:
    """'0,2' -> {0, 2}; None, '' or 'all' -> None (every GPU)."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    try:
        return frozenset(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--gpus: {text!r} is not a comma separated list of GPU indices") from None


def cpu_slots(option: int | None) -> int | None:
    """CPU-only jobs at once: by default one per CPU, so a sweep of CPU jobs cannot swamp the box
    (GPU jobs are bounded by the GPUs); 0 lifts the limit."""
    if option is None:
        return os.cpu_count() or 1
    return None if option <= 0 else option


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.worker", description="labdeck's worker daemon")
    p.add_argument("--home", default=None)
    p.add_argument("--gpus", default=None, help="GPU indices this worker may use, e.g. 0,2 ('all' resets)")
    p.add_argument("--detach", action="store_true", help="double-fork into the background, log to HOME/worker.log")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between rounds")
    p.add_argument("--heartbeat", type=float, default=3.0)
    p.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL when stopping a job")
    p.add_argument("--cpu-slots", type=int, default=None,
                   help="at most this many CPU-only jobs at once (default: the number of CPUs; 0: no limit)")
    p.add_argument("--backfill", action="store_true", help="let GPU jobs overtake a waiting bigger one")
    return p


def _setup_logging(stream: Any) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("labdeck")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _rotate(path: Path, limit: int = 10 << 20) -> None:
    try:
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))
    except OSError:
        pass


def _daemonize(home: Path) -> int:
    """Double fork: the grandchild runs the worker in its own session, stdio on HOME/worker.log.

    Returns the write end of a pipe in the grandchild (for its readiness line); in the original
    process it waits for that line, prints it and exits.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        os.waitpid(pid, 0)
        chunks = []
        while True:
            data = os.read(r, 4096)
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks).decode(errors="replace").strip()
        print(text or f"the worker exited before it was ready; see {log_path(home)}")
        os._exit(0 if text.startswith(("ok", "busy")) else 1)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    _rotate(log_path(home))
    fd = os.open(log_path(home), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(null)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    return w


def _tell(fd: int | None, line: str) -> None:
    if fd is None:
        print(line, flush=True)
        return
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = ensure_home(args.home)
    try:
        gpus = parse_gpus(args.gpus)
    except ValueError as e:
        print(f"labdeck: {e}", file=sys.stderr)
        return 2
    ready_fd = _daemonize(home) if args.detach else None
    _setup_logging(sys.stderr)
    lock = WorkerLock(home)
    if not lock.acquire(wait_s=2.0):
        _tell(ready_fd, f"busy: a worker is already running for {home}")
        return 0
    try:
        store = Store(home)
        if args.gpus is not None:  # remember for workers started on demand later
            with store.write() as s:
                set_setting(s, GPUS_KEY, "" if gpus is None else ",".join(map(str, sorted(gpus))))
        elif gpus is None:
            with store.read() as s:
                gpus = parse_gpus(get_setting(s, GPUS_KEY, "") or None)
        cfg = Config(home=home, gpus=gpus, poll_s=args.poll, heartbeat_s=args.heartbeat,
                     kill_grace_s=args.grace, cpu_slots=cpu_slots(args.cpu_slots), backfill=args.backfill)
        daemon = WorkerDaemon(cfg, store)
        daemon.install_signals()
        daemon.register()
    except Exception as e:  # noqa: BLE001 - report why, in one line, to whoever started us
        log.error("could not start:\n%s", traceback.format_exc())
        _tell(ready_fd, f"error: {type(e).__name__}: {e}")
        return 1
    _tell(ready_fd, f"ok: worker {daemon.worker_id} running (pid {os.getpid()}), log {log_path(home)}")
    try:
        return daemon.run()
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(main())
