"""LabdeckCallback: a plain Trainer run as a command job reports its loss curve, progress, checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from db.session import Store
from engine.events import iter_events

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # train_script.py, importable for the in-process tests
    sys.path.insert(0, str(HERE))
REPO = HERE.parents[1]
SCRIPT = HERE / "train_script.py"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABDECK_")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **extra)
    return env


def _run_job(home: Path, tiny_lm: Path, how: str) -> int:
    from worker_helpers import ThreadWorker, submit, wait_status

    store = Store(home)
    jid = submit(store, [sys.executable, str(SCRIPT), str(tiny_lm), "out", how], experiment="hf", name=f"trainer-{how}",
                 env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    with ThreadWorker(home, cpu_slots=1):
        st = wait_status(store, jid, timeout=240)
    log = (home / "runs" / str(jid) / "log.txt").read_text(errors="replace")
    assert st == "succeeded", log[-2000:]
    return jid


def _show(home: Path, jid: int) -> dict:
    r = subprocess.run([sys.executable, "-m", "cli", "show", str(jid), "--json", "--home", str(home)],
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def test_trainer_job_shows_its_loss_curve_progress_and_checkpoints(home: Path, tiny_lm: Path) -> None:
    jid = _run_job(home, tiny_lm, "callback")
    d = _show(home, jid)
    loss = d["series"]["loss"]
    assert [s for s, _ in loss] == [2, 4, 6, 8, 10, 12]  # logging_steps=2, max_steps=12
    assert all(v > 0 for _, v in loss)
    assert [s for s, _ in d["series"]["eval_loss"]] == [6, 12]
    assert {"learning_rate", "grad_norm", "tokens_per_s"} <= set(d["series"])
    assert d["series"]["learning_rate"][0][1] > d["series"]["learning_rate"][-1][1]  # linear decay
    assert d["progress"]["done"] == 12 and d["progress"]["total"] == 12
    assert {"train_loss", "train_runtime", "eval_loss", "global_step"} <= set(d["metrics"])
    assert d["metrics"]["global_step"] == 12
    ckpts = [a for a in d["artifacts"] if a["kind"] == "checkpoint"]
    assert [a["meta"]["step"] for a in ckpts] == [6, 12]
    assert all(Path(a["path"]).is_dir() and Path(a["path"]).name.startswith("checkpoint-") for a in ckpts)
    events = list(iter_events(home / "runs" / str(jid) / "events.jsonl"))
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["done"] for e in progress] == list(range(13)) and {e["unit"] for e in progress} == {"steps"}
    assert all(e["eta_s"] is not None and e["eta_s"] >= 0 for e in progress[2:])  # an ETA from the second step on
    summaries = [e for e in events if e["type"] == "metric" and e["name"] == "train_loss"]
    assert len(summaries) == 1 and "step" not in summaries[0]

    r = subprocess.run([sys.executable, "-m", "cli", "show", str(jid), "--home", str(home)], capture_output=True,
                       text=True, env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert "progress  12/12" in r.stdout and "loss                     6 points, step 2..12:" in r.stdout

    # the app's job detail charts the same curve
    from tui_helpers import settle

    from tui.app import LabdeckApp
    from tui.screens.job_detail import JobDetailScreen
    from tui.source import Source
    from tui.widgets.charts import MetricChart

    app = LabdeckApp(Source(store=Store(home)), start_worker=False, refresh_s=0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        app.push_screen(JobDetailScreen(jid))
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        charts = [c for c in app.screen.query(MetricChart) if not c.has_class("hidden")]
        by_name = {name: pts for c in charts for name, pts in c.series.items()}
        assert "loss" in by_name and len(by_name["loss"]) == 6


def test_report_to_labdeck_registers_the_callback(tmp_path: Path, tiny_lm: Path, monkeypatch) -> None:  # noqa: ANN001
    from train_script import train

    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("LABDECK_EVENTS", str(events))
    train(str(tiny_lm), str(tmp_path / "out"), "report_to")
    steps = [e["step"] for e in iter_events(events) if e["type"] == "metric" and e["name"] == "loss"]
    assert steps == [2, 4, 6, 8, 10, 12]


def test_outside_a_labdeck_job_the_callback_does_nothing(tmp_path: Path, tiny_lm: Path, monkeypatch) -> None:  # noqa: ANN001
    from train_script import train

    monkeypatch.delenv("LABDECK_EVENTS", raising=False)
    monkeypatch.chdir(tmp_path)
    train(str(tiny_lm), str(tmp_path / "out"), "callback")
    assert (tmp_path / "out" / "checkpoint-12").is_dir()  # it trained
    assert not list(tmp_path.rglob("events.jsonl"))


def test_only_the_main_process_reports(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from engine.integrations import LabdeckCallback

    events = tmp_path / "events.jsonl"
    args = TrainingArguments(output_dir=str(tmp_path / "o"), report_to=[], use_cpu=True)
    for zero in (False, True):
        state = TrainerState(is_world_process_zero=zero, global_step=3, max_steps=10)
        cb = LabdeckCallback(events=events)
        cb.on_log(args, state, TrainerControl(), logs={"loss": 1.5, "epoch": 0.3, "note": "text"})
        if not zero:
            assert not events.exists()
    got = [(e["name"], e["step"], e["value"]) for e in iter_events(events) if e["type"] == "metric"]
    assert got == [("loss", 3, 1.5), ("epoch", 3, 0.3)]
