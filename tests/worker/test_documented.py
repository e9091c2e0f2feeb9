"""Behaviour docs/worker.md promises, each checked on the real thing: a signal to the worker leaves its
jobs running for the next worker; `labdeck worker stop` returns at once while the worker lets a job
finish; env.json never records a *TOKEN* variable; `safe_join` keeps output names inside their folder.

Jobs here wait for a file the test writes, so every check is ordered by events, not by sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from worker_helpers import (
    PY,
    ProcWorker,
    child_env,
    pid_alive,
    status,
    submit,
    wait_for,
    wait_status,
    write_script,
)

from engine.control import worker_alive
from engine.paths import UnsafePath, safe_join

pytestmark = pytest.mark.timeout(180)

# A job that says it started (its pid) and then waits until the test releases it.
HELD_JOB = """
    import os, sys, time
    from pathlib import Path
    folder = Path(sys.argv[1])
    (folder / "started").write_text(str(os.getpid()))
    while not (folder / "release").exists():
        time.sleep(0.02)
"""


def _held(tmp_path: Path, store) -> tuple[int, Path]:  # noqa: ANN001
    script = write_script(tmp_path, "held.py", HELD_JOB)
    return submit(store, command=[PY, str(script), str(tmp_path)]), tmp_path


def _started_pid(folder: Path) -> int:
    wait_for(lambda: (folder / "started").exists(), timeout=60, what="the job to start")
    return int((folder / "started").read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_the_worker_leaves_its_jobs_running_for_the_next_worker(sig, tmp_path, store, home) -> None:  # noqa: ANN001
    jid, folder = _held(tmp_path, store)
    w = ProcWorker(home)
    try:
        pid = _started_pid(folder)
        w.proc.send_signal(sig)
        assert w.proc.wait(30) == 0
        assert not worker_alive(home)
        assert pid_alive(pid), f"{sig.name} to the worker stopped its job"
        assert status(store, jid) == "running"
    finally:
        w.stop()
    nxt = ProcWorker(home)  # adopts the job, and records how it ends
    try:
        (folder / "release").write_text("")
        assert wait_status(store, jid, timeout=60) == "succeeded"
    finally:
        nxt.stop()


def test_worker_stop_returns_at_once_and_the_worker_lets_the_job_finish(tmp_path, store, home) -> None:  # noqa: ANN001
    """The job cannot end before the test releases it, so `stop` returning first proves it does not wait."""
    jid, folder = _held(tmp_path, store)
    w = ProcWorker(home)
    try:
        pid = _started_pid(folder)
        r = subprocess.run([PY, "-m", "cli", "--home", str(home), "worker", "stop"], env=child_env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert pid_alive(pid) and status(store, jid) == "running" and w.proc.poll() is None
        (folder / "release").write_text("")
        assert w.proc.wait(60) == 0
        assert status(store, jid) == "succeeded"
    finally:
        w.stop()


def test_env_json_leaves_out_every_token_variable(tmp_path: Path) -> None:
    """Through the real launcher: HF_TOKEN and friends never reach env.json, the other recorded variables do."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "spec.json").write_text(json.dumps({"kind": "command", "command": [PY, "-c", "pass"]}))
    secret = "hf_s3cr3t_value"
    env = {**child_env(), "LABDECK_NO_GATE": "1", "HF_TOKEN": secret, "HF_HUB_TOKEN": secret,
           "LABDECK_API_TOKEN": secret, "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-m", "engine.launcher", str(run)], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    text = (run / "env.json").read_text()
    recorded = json.loads(text)["env"]
    assert secret not in text and not any("TOKEN" in k for k in recorded)
    assert recorded["HF_HOME"] == str(tmp_path / "hf") and recorded["LABDECK_NO_GATE"] == "1"


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a/..", "..", "~/x", "a\\b", "x\x00y", "",
                                  " a", "a ", "a//b", "a/", "."])
def test_safe_join_refuses_names_that_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        safe_join(tmp_path, name)


def test_safe_join_refuses_a_link_out_of_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    root.mkdir()
    (root / "out").symlink_to(tmp_path)
    with pytest.raises(UnsafePath):
        safe_join(root, "out/x")
    assert safe_join(root, "sub/metrics.json") == (root / "sub" / "metrics.json").resolve()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\~ \x00")), max_size=12))
def test_safe_join_result_is_always_inside_the_folder(name: str) -> None:
    root = Path(os.environ.get("TMPDIR", "/tmp")).resolve() / "labdeck-safe-join"
    try:
        path = safe_join(root, name)
    except UnsafePath:
        return
    assert path.is_relative_to(root) and path != root
