"""Failures around a Slurm worker: kill -9 of the worker, slurmctld restarted, a node lost, a crash
between sbatch and the commit of the Slurm id."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from slurm_helpers import ThreadSlurmWorker, start_process_worker
from sqlalchemy import select
from worker_helpers import PY, job, submit, wait_for, wait_status, write_script

from db.models import Job
from db.queue import claim
from db.session import Store
from engine.control import worker_alive
from engine.executors import Launch
from engine.executors import slurm as sl
from engine.executors.slurm_worker import SlurmConfig, SlurmWorker
from engine.rundir import job_env, prepare_run_dir
from engine.worker import Config

ONCE = """
import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(os.environ["LABDECK_JOB_ID"] + "\\n")
from engine.events import Reporter
r = Reporter()
for i in range(int(sys.argv[2])):
    r.metric("m", i, step=i)
    time.sleep(float(sys.argv[3]))
"""


def test_kill_9_worker_with_jobs_pending_and_running_adopts_all_runs_none_twice(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    script = write_script(tmp_path, "once.py", ONCE)
    starts = tmp_path / "starts.txt"
    # 8 CPUs in the cluster: 6 one-CPU jobs run, 2 asking for 8 CPUs each wait (PENDING, Resources).
    ids = [submit(store, [PY, str(script), str(starts), "6", "0.5"], name=f"j{i}") for i in range(6)]
    ids += [submit(store, [PY, str(script), str(starts), "2", "0.2"], name=f"big{i}", slurm={"cpus_per_task": 8})
            for i in range(2)]
    w = start_process_worker(home)
    try:
        wait_for(lambda: sum(job(store, j).slurm_state == "RUNNING" for j in ids) >= 2
                 and any(job(store, j).slurm_state == "PENDING" for j in ids), 60, what="running and pending jobs")
        before = {j: job(store, j).slurm_job_id for j in ids}
        pending = [j for j in ids if job(store, j).slurm_state == "PENDING"]
        assert pending and job(store, pending[0]).slurm_reason, "a pending job shows Slurm's reason"
        os.kill(w.pid, signal.SIGKILL)
        w.wait(10)
        wait_for(lambda: not worker_alive(home), 30, what="the dead worker's lock to be free")
        w = start_process_worker(home)
        for j in ids:
            assert wait_status(store, j, timeout=120) == "succeeded", job(store, j).failure_detail
    finally:
        w.kill()
        w.wait(10)
    assert {j: job(store, j).slurm_job_id for j in ids} == {j: before[j] or job(store, j).slurm_job_id for j in ids}
    assert Counter(starts.read_text().split()) == Counter(str(j) for j in ids)  # each ran exactly once
    assert "adopted" in (home / "test-worker.log").read_text()


def test_crash_between_sbatch_and_commit_finds_the_job_by_name(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    script = write_script(tmp_path, "once.py", ONCE)
    starts = tmp_path / "starts.txt"
    jid = submit(store, [PY, str(script), str(starts), "2", "0.2"])
    # The first worker claims and submits, then "dies" before the Slurm id is committed.
    first = SlurmWorker(Config(home=home), SlurmConfig())
    with first.store.write() as s:
        assert claim(s, jid, host="slurm", run_dir=str(first.run_dir(jid)))
    rd = prepare_run_dir(home, jid, job(store, jid).spec)
    handle = first.executor.start(Launch(job_id=jid, run_dir=rd, env=job_env(dict(os.environ), jid, rd, (), 0)))
    assert job(store, jid).external_id == ""
    first._watch.close()
    with ThreadSlurmWorker(home):
        assert wait_status(store, jid, timeout=60) == "succeeded"
    assert job(store, jid).slurm_job_id == handle.external_id == job(store, jid).external_id
    assert starts.read_text().split() == [str(jid)]


def test_slurmctld_restarted_mid_run(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    script = write_script(tmp_path, "once.py", ONCE)
    starts = tmp_path / "starts.txt"
    ids = [submit(store, [PY, str(script), str(starts), "8", "0.5"], name=f"j{i}") for i in range(2)]
    with ThreadSlurmWorker(home) as w:
        wait_for(lambda: all(job(store, j).slurm_state == "RUNNING" for j in ids), 60, what="running")
        cluster.stop_daemon("slurmctld")
        # Calls are counted as they begin, one at a time: the next one meets no slurmctld, and once the
        # one after it begins the worker has handled that failed poll; jobs must stay as they are.
        calls = w.daemon.client.calls.get("squeue", 0)
        wait_for(lambda: w.daemon.client.calls.get("squeue", 0) >= calls + 2, 120, what="a failed squeue poll")
        assert all(job(store, j).status.value == "running" for j in ids)
        cluster.start_ctld()
        for j in ids:
            assert wait_status(store, j, timeout=90) == "succeeded", job(store, j).failure_detail
    assert Counter(starts.read_text().split()) == Counter(str(j) for j in ids)


def test_node_down_is_node_fail_interrupted_and_retried(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    script = write_script(tmp_path, "once.py", ONCE)
    starts = tmp_path / "starts.txt"
    jid = submit(store, [PY, str(script), str(starts), "60", "0.5"])
    with ThreadSlurmWorker(home):
        wait_for(lambda: job(store, jid).slurm_state == "RUNNING", 60, what="running")
        wait_for(lambda: starts.exists(), 30, what="the job to start")
        cluster.run("scontrol", "update", f"nodename={cluster.host}", "state=down", "reason=labdeck-test")
        assert wait_status(store, jid, timeout=60) == "interrupted"
        row = job(store, jid)
        assert row.failure_reason == "node_fail" and row.slurm_state == "NODE_FAIL", (row.slurm_state, row.failure_detail)
        # ReturnToService=2 may already have brought the node back (then RESUME is refused).
        cluster.run("scontrol", "update", f"nodename={cluster.host}", "state=resume", check=False)
        cluster.wait_idle(60)
        with store.read() as s:
            retry_id = s.execute(select(Job.id).where(Job.parent_id == jid)).scalar()
        assert retry_id is not None, "a lost node is retried"
        # The retry runs; stopped from outside once it has started, so the test does not wait for it.
        wait_for(lambda: str(retry_id) in starts.read_text().split(), 60, what="the retry to run")
        # sbatch can start the job before the worker commits the Slurm id it was given.
        wait_for(lambda: job(store, retry_id).slurm_job_id, 30, what="the retry's Slurm id")
        cluster.run("scancel", job(store, retry_id).slurm_job_id)
        assert wait_status(store, retry_id, timeout=30) in ("cancelled", "succeeded")
    assert starts.read_text().split().count(str(retry_id)) == 1


def test_state_mapping_covers_every_slurm_end() -> None:
    cases = {
        "TIMEOUT": ("failed", "time_limit"), "DEADLINE": ("failed", "time_limit"),
        "OUT_OF_MEMORY": ("failed", "signal"), "NODE_FAIL": ("interrupted", "node_fail"),
        "BOOT_FAIL": ("interrupted", "node_fail"), "PREEMPTED": ("interrupted", "preempted"),
        "CANCELLED": ("cancelled", "cancelled"),
    }
    for state, want in cases.items():
        end = sl.end_of(state, "", None, None)
        assert end is not None and (end.status, end.reason) == want, state
    assert sl.end_of("COMPLETED", "", {"returncode": 0}, None) is None  # exit.json decides
    assert sl.end_of("FAILED", "", {"returncode": 3}, None) is None
    assert sl.end_of("FAILED", "NonZeroExitCode", None, None).status == "failed"
    assert sl.end_of("CANCELLED", "", None, "time_limit").reason == "time_limit"
    assert all(s not in sl.TERMINAL for s in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED"))
