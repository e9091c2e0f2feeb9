"""Jobs through a real Slurm: a three-stage pipeline, the batch script, the Slurm side in the store."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from slurm_helpers import ThreadSlurmWorker
from worker_helpers import PY, job, metrics, wait_status, write_script

from db.queries import job_detail, slurm_partitions
from db.queue import enqueue
from db.session import Store
from engine.specfile import expand
from tui.screens.gpus import partitions_table
from tui.screens.job_detail import overview_renderable
from tui.source import DetailData

STAGE = """
import json, os, sys
from engine.events import Reporter
out = os.path.join(os.environ["LABDECK_RUN_DIR"], "outputs", "n.txt")
prev = int(open(sys.argv[1]).read()) if len(sys.argv) > 1 else 0
open(out, "w").write(str(prev + 1))
Reporter().metric("n", prev + 1)
print("SLURM_JOB_ID", os.environ.get("SLURM_JOB_ID"), "CUDA", repr(os.environ.get("CUDA_VISIBLE_DEVICES")))
"""


def test_three_stage_pipeline_runs_through_slurm(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    script = write_script(tmp_path, "stage.py", STAGE)
    pipe = {
        "experiment": "slurm",
        "stages": [
            {"name": "a", "kind": "command", "command": [PY, str(script)]},
            {"name": "b", "kind": "command", "command": [PY, str(script), "${stages.a.outputs}/n.txt"], "gpus": 1},
            {"name": "c", "kind": "command", "command": [PY, str(script), "${stages.b.outputs}/n.txt"],
             "slurm": {"partition": "other"}},
        ],
    }
    exp = expand(pipe)
    with store.write() as s:
        ids = enqueue(s, exp.drafts, resolve=exp.resolver(home))
    with ThreadSlurmWorker(home) as w:
        for jid in ids:
            assert wait_status(store, jid, timeout=60) == "succeeded", job(store, jid).failure_detail
    assert [metrics(store, jid, "n")[0][2] for jid in ids] == [1.0, 2.0, 3.0]
    rows = [job(store, jid) for jid in ids]
    slurm_ids = [r.slurm_job_id for r in rows]
    assert all(slurm_ids) and len(set(slurm_ids)) == 3
    assert all(r.slurm_state == "COMPLETED" and r.slurm_nodes == cluster.host for r in rows)
    for r in rows:  # the job saw its Slurm id; only the GPU stage saw a GPU
        log = (Path(r.run_dir) / "log.txt").read_text()
        assert f"SLURM_JOB_ID {r.slurm_job_id}" in log
        assert ("CUDA '0'" in log) == (r.name.endswith("b")), log
        assert json.loads((Path(r.run_dir) / "exit.json").read_text())["returncode"] == 0
    script_text = (Path(rows[2].run_dir) / "job.sbatch").read_text()
    assert "#SBATCH --partition=other" in script_text and "--job-name=labdeck-" in script_text
    assert "#SBATCH --gres=gpu:1" in (Path(rows[1].run_dir) / "job.sbatch").read_text()
    # The GPUs screen's partitions, from sinfo: the cluster's two fake GPUs on both partitions.
    with store.read() as s:
        parts = {p["partition"]: p for p in slurm_partitions(s)}
    assert set(parts) == {"debug", "other"} and parts["debug"]["gpus_total"] == 2
    # The app's job detail and GPUs screen show the Slurm side.
    console = Console(width=120, record=True)
    with store.read() as s:
        detail = job_detail(s, ids[1])
    console.print(overview_renderable(DetailData(detail, (), ()), time.time()))
    console.print(partitions_table(tuple(parts.values())))
    text = console.export_text()
    assert f"job {rows[1].slurm_job_id}  COMPLETED" in text and f"on {cluster.host}" in text
    assert "debug" in text and ("0/2" in text or "2/2" in text)
    # Tracking is one scheduler call per poll for all jobs, never one per job.
    calls = w.daemon.client.calls
    assert calls.get("squeue", 0) <= w.daemon.polls + 1 and calls.get("sbatch") == 3
