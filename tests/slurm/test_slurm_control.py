"""Stopping jobs through Slurm: cancel, a time limit, scancel from outside, a bad partition.

All four run at once in one worker, so the minute Slurm needs to enforce a time limit (it counts
whole minutes) is paid once.
"""

from __future__ import annotations

import time
from pathlib import Path

from slurm_helpers import ThreadSlurmWorker
from worker_helpers import PY, job, submit, wait_for, wait_status, write_script

from db.queue import request_cancel
from db.session import Store

SLEEPER = """
import sys, time
from engine.events import Reporter
Reporter().metric("alive", 1)
time.sleep(float(sys.argv[1]))
"""


def test_cancel_time_limit_outside_scancel_and_bad_partition(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    script = write_script(tmp_path, "sleep.py", SLEEPER)
    cancel_me = submit(store, [PY, str(script), "300"], name="cancel")
    limited = submit(store, [PY, str(script), "300"], name="limited", time_limit=5)
    outside = submit(store, [PY, str(script), "300"], name="outside")
    bad = submit(store, [PY, str(script), "1"], name="bad", slurm={"partition": "nope"})
    fine = submit(store, [PY, str(script), "1"], name="fine")
    with ThreadSlurmWorker(home):
        for jid in (cancel_me, limited, outside):
            wait_for(lambda jid=jid: job(store, jid).slurm_state == "RUNNING", 60, what=f"job {jid} RUNNING")
        # A partition that does not exist: failed with Slurm's own message, nothing else affected.
        assert wait_status(store, bad, timeout=30) == "failed"
        row = job(store, bad)
        assert row.failure_reason == "spawn_error" and "invalid partition" in row.failure_detail.lower(), row.failure_detail
        assert wait_status(store, fine, timeout=60) == "succeeded"

        with store.write() as s:
            request_cancel(s, cancel_me)
        assert wait_status(store, cancel_me, timeout=30) == "cancelled"
        row = job(store, cancel_me)
        assert row.slurm_state == "CANCELLED" and row.failure_reason == "cancelled"

        cluster.run("scancel", job(store, outside).slurm_job_id)
        assert wait_status(store, outside, timeout=30) == "cancelled"
        row = job(store, outside)
        assert row.slurm_state == "CANCELLED" and "outside labdeck" in row.failure_detail

        t0 = time.monotonic()
        assert wait_status(store, limited, timeout=150) == "failed"
        row = job(store, limited)
        assert row.failure_reason == "time_limit" and row.slurm_state == "TIMEOUT", (row.slurm_state, row.failure_detail)
        print(f"TIMEOUT seen {time.monotonic() - t0:.0f} s after the other checks")
    assert "#SBATCH --time=0-00:00:05" in (Path(job(store, limited).run_dir) / "job.sbatch").read_text()
