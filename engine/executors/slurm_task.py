"""`python -m engine.executors.slurm_task CMD...`: one rank of a distributed job launched by `srun`.

A multi-node (or multi-task) job under Slurm is started by `srun`, one task per GPU on every node
(`slurm: {nodes: N, gpus_per_node: G}`). Each task turns Slurm's view of itself into the variables
torch.distributed's `env://` rendezvous reads (what torchrun would set): RANK from SLURM_PROCID,
LOCAL_RANK from SLURM_LOCALID, WORLD_SIZE from SLURM_NTASKS, NODE_RANK from SLURM_NODEID, and the
rendezvous at the first node of the allocation on the port the batch step picked
(LABDECK_MASTER_PORT, a free port there). Then it replaces itself with the job's command, so
accelerate's `Accelerator` (DDP/FSDP, NCCL on GPUs, gloo on CPUs) finds a ready process group.

Standard library only: it runs before the job and must not cost start-up time.
"""

from __future__ import annotations

import os
import subprocess
import sys


def first_node(nodelist: str) -> str:
    """The first host of a Slurm node list (`gpu[01-04],cpu7` -> gpu01), via `scontrol show hostnames`."""
    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,  # noqa: S603,S607
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return nodelist.split(",")[0].split("[")[0]


def rank_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    ntasks = env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS") or "1"
    out.update({
        "RANK": env.get("SLURM_PROCID", "0"),
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "WORLD_SIZE": ntasks,
        "NODE_RANK": env.get("SLURM_NODEID", "0"),
        "LOCAL_WORLD_SIZE": str(int(ntasks) // max(1, int(env.get("SLURM_NNODES", "1") or 1))),
        "MASTER_ADDR": env.get("LABDECK_MASTER_ADDR") or first_node(env.get("SLURM_JOB_NODELIST", "")),
        "MASTER_PORT": env.get("LABDECK_MASTER_PORT", "29500"),
    })
    # With GPUs, each rank sees its own card (Slurm gives the node's cards to every task).
    visible = [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if len(visible) > 1 and int(out["LOCAL_RANK"]) < len(visible):
        out["CUDA_VISIBLE_DEVICES"] = visible[int(out["LOCAL_RANK"])]
        out["LOCAL_RANK"] = "0"  # this process's only device is cuda:0
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m engine.executors.slurm_task CMD...", file=sys.stderr)
        return 2
    env = rank_env(dict(os.environ))
    os.execvpe(argv[0], argv, env)  # noqa: S606 - argument list, the job's own command
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
