"""The batch script and the spec's `slurm:` block, without a cluster: what sbatch is asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.executors import slurm as sl
from engine.specfile import SpecError, expand


def spec(**over: object) -> dict:
    data = {"experiment": "e", "name": "n", "kind": "command", "command": ["python", "x.py"], **over}
    return expand(data).drafts[0].spec


def test_worker_defaults_are_overridden_by_the_spec_block(tmp_path: Path) -> None:
    defaults = sl.Defaults(partition="gpu", account="proj", qos="normal", sbatch_args=("--exclusive",))
    opts = sl.sbatch_options(spec(gpus=2, time_limit="2h", slurm={"partition": "a100", "mem_gb": 64,
                                                                   "extra": ["--reservation=r1"]}),
                             defaults, "labdeck-abc-7", tmp_path)
    assert "--partition=a100" in opts and "--account=proj" in opts and "--qos=normal" in opts
    assert "--gres=gpu:2" in opts and "--mem=65536M" in opts and "--time=0-02:00:00" in opts
    assert "--signal=B:USR1@120" in opts and "--no-requeue" in opts
    assert opts.index("--exclusive") < opts.index("--reservation=r1")  # the spec's extras come last
    assert f"--output={tmp_path / 'log.txt'}" in opts and "--job-name=labdeck-abc-7" in opts


def test_multi_node_asks_for_one_task_per_gpu_on_every_node(tmp_path: Path) -> None:
    opts = sl.sbatch_options(spec(kind="command", gpus=16, slurm={"nodes": 2, "gpus_per_node": 8, "requeue": True}),
                             sl.Defaults(), "n", tmp_path)
    assert {"--nodes=2", "--ntasks-per-node=8", "--gres=gpu:8", "--requeue"} <= set(opts)


def test_the_script_quotes_values_and_runs_the_launcher(tmp_path: Path) -> None:
    run = tmp_path / "run dir"
    text = sl.batch_script(spec(), sl.Defaults(), "n", run, {"LABDECK_JOB_ID": "7", "LABDECK_X": "a'b; rm -rf /"})
    assert "export LABDECK_X='a'\"'\"'b; rm -rf /'" in text
    assert text.rstrip().endswith(f"-m engine.launcher '{run}'") and "export CUDA_VISIBLE_DEVICES=" in text


@pytest.mark.parametrize(("block", "needle"), [
    ({"partiton": "gpu"}, "slurm.partiton"),
    ({"nodes": 0}, "slurm.nodes"),
    ({"extra": ["exclusive"]}, "slurm.extra"),
    ({"partition": "gpu; rm -rf /"}, "slurm.partition"),
])
def test_bad_slurm_fields_are_refused_at_submit_in_one_line(block: dict, needle: str) -> None:
    with pytest.raises(SpecError) as e:
        spec(slurm=block)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_job_names_carry_the_labdeck_id_and_keep_homes_apart(tmp_path: Path) -> None:
    a, b = sl.job_name(tmp_path / "a", 12), sl.job_name(tmp_path / "b", 12)
    assert a.startswith("labdeck-") and a.endswith("-12") and a != b


def test_squeue_and_scontrol_parsing() -> None:
    jobs = sl.parse_squeue("41|PENDING|Resources|(null)|labdeck-x-1\n42|RUNNING|None|gpu[01-02]|labdeck-x-2\n")
    assert (jobs["41"].state, jobs["41"].reason, jobs["41"].nodes) == ("PENDING", "Resources", "")
    assert (jobs["42"].state, jobs["42"].nodes) == ("RUNNING", "gpu[01-02]")
    # sacct -n -X -P -o JobID,State,Reason,NodeList,JobName (the path with accounting on)
    acct = sl.parse_squeue("44|CANCELLED by 1000|None|gpu03|labdeck-x-4\n45|PENDING|Priority|None assigned|labdeck-x-5\n"
                           "46|OUT_OF_MEMORY|OutOfMemory|gpu04|labdeck-x-6\n")
    assert (acct["44"].state, acct["44"].reason, acct["44"].nodes) == ("CANCELLED", "by 1000", "gpu03")
    assert sl.end_of(acct["44"].state, acct["44"].reason, None, None).detail == \
        "cancelled outside labdeck (Slurm: CANCELLED by 1000)"
    assert (acct["45"].state, acct["45"].reason, acct["45"].nodes) == ("PENDING", "Priority", "")
    assert sl.end_of(acct["46"].state, acct["46"].reason, None, None).status == "failed"
    one = sl.parse_scontrol("JobId=43 JobName=labdeck-x-3 JobState=NODE_FAIL Reason=NodeDown NodeList=gpu07 X=1")
    assert one is not None and (one.state, one.reason, one.nodes) == ("NODE_FAIL", "NodeDown", "gpu07")


def test_two_homes_sharing_one_runs_dir_never_share_a_run_folder(tmp_path: Path) -> None:
    from db.home import ensure_home, run_dir, set_runs_dir

    shared = tmp_path / "scratch"
    a, b = ensure_home(tmp_path / "a"), ensure_home(tmp_path / "b")
    set_runs_dir(a, shared)
    set_runs_dir(b, shared)
    assert run_dir(a, 1).parent.parent == run_dir(b, 1).parent.parent == shared and run_dir(a, 1) != run_dir(b, 1)
    set_runs_dir(a, None)
    assert run_dir(a, 1) == a / "runs" / "1"
