"""The app on a home whose worker runs jobs through Slurm: the GPUs screen lists Slurm's partitions
(from the worker's `sinfo`) and a job's detail shows Slurm's side of it (id, state, node)."""

from __future__ import annotations

import sys
from pathlib import Path

from slurm_helpers import ThreadSlurmWorker
from tui_helpers import screen_text, settle, until
from worker_helpers import job, submit, wait_for

from db.queue import request_cancel
from db.session import Store
from tui.app import LabdeckApp
from tui.source import Source


async def test_gpus_screen_lists_partitions_and_job_detail_shows_the_slurm_job(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    jid = submit(store, [sys.executable, "-c", "import time; time.sleep(600)"], name="nap")
    with ThreadSlurmWorker(home):
        wait_for(lambda: job(store, jid).slurm_state == "RUNNING", 60, what="the job RUNNING in Slurm")
        app = LabdeckApp(Source(store=Store(home)), start_worker=False, refresh_s=0.2)
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            await pilot.press("3")
            await until(pilot, lambda: "Slurm partitions" in screen_text(app), "the partitions table")
            lines = screen_text(app).splitlines()
            for partition in ("debug", "other"):
                assert any(line.split() and line.split()[0].rstrip("*") == partition for line in lines), partition

            await pilot.press("1")
            await settle(pilot)
            app.open_job(jid)
            want = f"job {job(store, jid).slurm_job_id}  RUNNING"
            await until(pilot, lambda: want in screen_text(app), "the job's Slurm line")
            slurm_line = next(line for line in screen_text(app).splitlines() if want in line)
            assert f"on {cluster.host}" in slurm_line
        with store.write() as s:
            request_cancel(s, jid)
        wait_for(lambda: job(store, jid).status.value == "cancelled", 30, what="the job cancelled")
