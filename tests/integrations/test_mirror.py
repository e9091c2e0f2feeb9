"""The optional W&B mirror: off by default, configured per home, run beside the job in W&B's offline mode."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

from db.session import Store
from engine.integrations.mirror import CONFIG_FILE, LOG_FILE, follow, read_config, write_config

SCRIPT = """
from engine.events import Reporter
r = Reporter()
for step, loss in enumerate([2.5, 1.75, 1.125], start=1):
    r.metric("loss", loss, step=step)
r.metric("accuracy_final", 0.8125)
r.close()
"""


def _job(home: Path, tmp_path: Path) -> int:
    from worker_helpers import ThreadWorker, submit, wait_status

    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    store = Store(home)
    jid = submit(store, [sys.executable, str(script)], experiment="mirror", name="metrics",
                 env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    with ThreadWorker(home):
        assert wait_status(store, jid, timeout=60) == "succeeded"
    return jid


def test_settings_are_checked_and_off_means_no_file(tmp_path: Path) -> None:
    assert read_config(tmp_path) is None
    write_config(tmp_path, {"tracker": "wandb", "project": "lab", "mode": "offline"})
    assert read_config(tmp_path) == {"tracker": "wandb", "project": "lab", "mode": "offline"}
    assert (tmp_path / CONFIG_FILE).stat().st_mode & 0o777 == 0o600
    (tmp_path / CONFIG_FILE).write_text('{"mode": "sometimes"}')
    with pytest.raises(ValueError, match=r"mirror.json: mode 'sometimes' is not one of offline, online, disabled"):
        read_config(tmp_path)
    write_config(tmp_path, None)
    assert not (tmp_path / CONFIG_FILE).exists()


def test_follow_sends_steps_and_summaries_until_the_job_ends(tmp_path: Path) -> None:
    from engine.events import Reporter
    from engine.launcher import write_json_atomic

    rep = Reporter(tmp_path / "events.jsonl")
    rep.metric("loss", 1.0, step=1)
    rep.progress(1, 2)
    rep.metric("loss", 0.5, step=2)
    rep.metric("acc", 0.75)
    rep.close()
    write_json_atomic(tmp_path / "exit.json", {"returncode": 0})

    class Sink:
        got: list = []

        def metric(self, name: str, value: float, step: int | None) -> None:
            self.got.append((name, value, step))

    sink = Sink()
    assert follow(tmp_path, sink, poll_s=0.01, max_wait_s=5) == 3
    assert sink.got == [("loss", 1.0, 1), ("loss", 0.5, 2), ("acc", 0.75, None)]


def test_without_a_setting_no_mirror_runs(home: Path, tmp_path: Path) -> None:
    jid = _job(home, tmp_path)
    assert not (home / "runs" / str(jid) / LOG_FILE).exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_a_job_is_mirrored_to_an_offline_wandb_run(home: Path, tmp_path: Path) -> None:
    write_config(home, {"tracker": "wandb", "project": "labdeck-test", "mode": "offline"})
    jid = _job(home, tmp_path)
    run_dir = home / "runs" / str(jid)
    log = run_dir / LOG_FILE
    deadline = time.monotonic() + 180
    while "mirrored" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no mirror.log"
        time.sleep(0.5)
    assert "mirrored 4 metrics to wandb (offline) project labdeck-test" in log.read_text()
    runs = list((run_dir / "wandb").glob(f"offline-run-*-labdeck-{jid}-*/run-labdeck-{jid}-*.wandb"))
    assert len(runs) == 1
    data = runs[0].read_bytes()
    for text in (b"loss", b"1.75", b"1.125", b"accuracy_final", b"0.8125", b"labdeck-test", b"mirror"):
        assert text in data, text  # history, summary, project and the job's experiment as the group
