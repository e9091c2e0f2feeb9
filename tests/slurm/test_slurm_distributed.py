"""The multi-task path: `srun` starts one rank per task, the rendezvous comes from Slurm's
environment, and a tiny CPU data-parallel fine-tune (gloo) trains as one job."""

from __future__ import annotations

import json
from pathlib import Path

from slurm_helpers import ThreadSlurmWorker
from worker_helpers import job, wait_status

from db.queue import enqueue
from db.session import Store
from engine.executors.slurm_task import rank_env
from engine.specfile import expand

RECORDS = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} " * (1 + i % 5)} for i in range(16)]


def test_two_task_srun_launch_of_a_cpu_data_parallel_finetune(cluster, tiny, tmp_path: Path) -> None:  # noqa: ANN001
    home = tmp_path / "home"
    store = Store(home)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    exp = expand({"experiment": "ddp", "name": "sft", "kind": "finetune", "model": str(tiny.llama),
                  "dataset": str(data), "template": "alpaca", "learning_rate": 1e-2, "max_steps": 3,
                  "per_device_batch": 2, "grad_accum": 1, "warmup_steps": 0,
                  "slurm": {"tasks_per_node": 2, "cpus_per_task": 1}})
    with store.write() as s:
        (jid,) = enqueue(s, exp.drafts, resolve=exp.resolver(home))
    with ThreadSlurmWorker(home):
        assert wait_status(store, jid, timeout=400) == "succeeded", job(store, jid).failure_detail
    row = job(store, jid)
    rd = Path(row.run_dir)
    script = (rd / "job.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "LABDECK_SLURM_TASKS=2" in script
    events = [json.loads(x) for x in (rd / "events.jsonl").read_text().splitlines()]
    assert [e["parallel"] for e in events if "parallel" in e] == ["DDP"]  # two ranks, one process group
    assert len([e for e in events if e.get("type") == "metric" and e.get("name") == "loss"]) == 3  # rank 0 only
    assert (rd / "outputs" / "model" / "model.safetensors").is_file()
    argv = json.loads((rd / "env.json").read_text())["argv"]  # what the launcher ran
    assert argv[0] == "srun" and "engine.executors.slurm_task" in argv


def test_rank_environment_from_slurm() -> None:
    env = rank_env({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8", "SLURM_NNODES": "2",
                    "SLURM_NODEID": "1", "LABDECK_MASTER_ADDR": "gpu01", "LABDECK_MASTER_PORT": "29577",
                    "CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    assert (env["RANK"], env["WORLD_SIZE"], env["NODE_RANK"], env["LOCAL_WORLD_SIZE"]) == ("5", "8", "1", "4")
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("gpu01", "29577")
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["LOCAL_RANK"] == "0"  # each rank its own card
