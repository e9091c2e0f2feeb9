"""As a new user would: `labdeck worker start --executor slurm`, submit, show --json, cancel,
kill -9 of the worker and adoption; and the one-line refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
from worker_helpers import REPO, child_env, job, wait_for, wait_status

from db.session import Store
from engine.executors.slurm_start import NETWORK_FS, network_fs


def labdeck(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "--home", str(home), *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=env or child_env(SLURM_CONF=os.environ["SLURM_CONF"]))


def show(home: Path, job_id: int) -> dict:
    r = labdeck(home, "show", str(job_id), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def worker_pid(home: Path) -> int:
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "engine.daemon" in cmd and str(home) in cmd:
            return p.pid
    raise AssertionError("no worker process")


def test_worker_start_executor_slurm_show_cancel_and_adopt_after_kill_9(cluster, tmp_path: Path) -> None:
    home = tmp_path / "home"
    runs = tmp_path / "shared-scratch"
    spec = tmp_path / "sleep.yaml"
    spec.write_text(f"experiment: cli\nname: nap\nkind: command\ncommand: ['{sys.executable}', '-c', "
                    "'import sys, time; time.sleep(float(sys.argv[1]))', '${vars.t}']\nvars: {t: 1}\n")
    r = labdeck(home, "worker", "start", "--executor", "slurm", "--partition", "debug", "--runs-dir", str(runs),
                "--sbatch-arg=--comment=labdeck-test")
    assert r.returncode == 0 and "Slurm" in r.stdout, r.stdout + r.stderr
    try:
        r = labdeck(home, "submit", str(spec), "--var", "t=600", "--json")
        assert r.returncode == 0, r.stderr
        a, = json.loads(r.stdout)["ids"]
        r = labdeck(home, "submit", str(spec), "--var", "t=12", "--json")
        b, = json.loads(r.stdout)["ids"]
        store = Store(home)
        wait_for(lambda: job(store, a).slurm_state == "RUNNING" and job(store, b).slurm_state == "RUNNING",
                 60, interval=0.2, what="both jobs RUNNING in Slurm")
        d = show(home, a)
        assert d["slurm_job_id"] and d["slurm_nodes"] == cluster.host and d["run_dir"].startswith(str(runs))
        script = Path(d["run_dir"], "job.sbatch").read_text()
        assert "#SBATCH --partition=debug" in script and "#SBATCH --comment=labdeck-test" in script
        assert "slurm     job" in labdeck(home, "show", str(a)).stdout

        os.kill(worker_pid(home), signal.SIGKILL)  # jobs keep running in Slurm
        assert labdeck(home, "cancel", str(a)).returncode == 0
        r = labdeck(home, "worker", "start")  # no options: the remembered executor and options apply
        assert r.returncode == 0 and "Slurm" in r.stdout, r.stdout + r.stderr
        wait_status(store, a, "cancelled", timeout=60)
        assert job(store, a).slurm_state == "CANCELLED"
        wait_status(store, b, "succeeded", timeout=60)
        db = show(home, b)
        assert db["status"] == "succeeded" and db["slurm_state"] == "COMPLETED" and db["slurm_job_id"] != d["slurm_job_id"]
        log = (home / "worker.log").read_text()
        assert "adopted" in log
    finally:
        labdeck(home, "worker", "stop")
        try:
            os.kill(worker_pid(home), signal.SIGKILL)
        except AssertionError:
            pass


def test_refuses_without_sbatch_in_one_line(tmp_path: Path) -> None:
    env = child_env()
    env["PATH"] = str(tmp_path)  # nothing there: no sbatch
    r = subprocess.run([sys.executable, "-m", "engine.daemon", "--home", str(tmp_path / "h"), "--executor", "slurm"],
                       capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "sbatch is not on PATH" in r.stderr, r.stderr


def test_network_filesystems_are_named_from_statfs(tmp_path: Path) -> None:
    assert network_fs(tmp_path) is None  # the test's own disk is local
    assert network_fs(tmp_path, 0x6969) == "NFS" and network_fs(tmp_path, 0x0BD00BD0) == "Lustre"
    assert network_fs(tmp_path, 0x47504653) == "GPFS" and len(NETWORK_FS) >= 3
