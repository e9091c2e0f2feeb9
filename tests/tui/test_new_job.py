"""The New-job form: menus and keys → a validated spec → queued jobs (or a file)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from tui_helpers import screen_text, settle, type_text, until

from db.models import Job
from engine.specfile import expand_file
from tui.screens.dialogs import PromptScreen
from tui.screens.new_job import NewJobScreen
from tui.widgets.jobs_table import JobsTable


def _specs(store, after: int = 18) -> list[tuple[int, str, dict]]:  # noqa: ANN001
    with store.read() as s:
        return [(i, n, json.loads(sp)) for i, n, sp in
                s.execute(select(Job.id, Job.name, Job.spec).where(Job.id > after).order_by(Job.id)).all()]


async def _choose(pilot, label: str) -> None:  # noqa: ANN001
    """Move down the kind/preset menu to the entry whose id is `label`, and press enter."""
    from textual.widgets import OptionList

    menu = pilot.app.screen.query_one("#kind-menu", OptionList)
    for _ in range(menu.option_count):
        if menu.highlighted is not None and menu.get_option_at_index(menu.highlighted).id == label:
            break
        await pilot.press("down")
    await pilot.press("enter")
    await settle(pilot)


async def test_new_command_job_from_the_menus_gets_queued(app, home_copy, store_of) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, NewJobScreen)
        await _choose(pilot, "kind:command")
        # the cursor waits in the first required field that is still empty: the command
        assert app.focused.id == "f-command"
        await type_text(pilot, "python -c 'print(42)'")
        await until(pilot, lambda: "✔ valid" in screen_text(app), "the form validated (debounced)")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, NewJobScreen)
        [(jid, name, spec)] = _specs(store)
        assert spec["command"] == ["python", "-c", "print(42)"] and spec["kind"] == "command"
        assert name == "command" and spec["experiment"] == "calibration"  # the newest experiment is the default
        table = app.screen.query_one(JobsTable)
        assert table.cursor_job_id == jid
        assert str(table.get_cell(str(jid), "status")) == "queued"


async def test_invalid_value_is_shown_at_its_field_and_nothing_is_queued(app, home_copy, store_of) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await _choose(pilot, "kind:finetune")
        screen = app.screen
        assert app.focused.id == "f-model"
        await type_text(pilot, "Qwen/Qwen2.5-0.5B")
        screen.set_value("dataset", "data/train.jsonl")
        screen.set_value("learning_rate", "-1")
        await settle(pilot)
        await until(pilot, lambda: screen.query_one("#row-learning_rate").has_class("-invalid"),
                    "the debounced check marking learning_rate invalid")
        assert "learning_rate: Input should be greater than 0" in str(screen.query_one("#form-status").render())
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, NewJobScreen)
        assert _specs(store) == []
        screen.set_value("learning_rate", "1e-4")
        await until(pilot, lambda: not screen.query_one("#row-learning_rate").has_class("-invalid"),
                    "the debounced check clearing learning_rate")
        await pilot.press("ctrl+s")
        await settle(pilot)
        [(_, _, spec)] = _specs(store)
        assert spec["learning_rate"] == 1e-4 and spec["model"]["path"] == "Qwen/Qwen2.5-0.5B"


async def test_sweep_axes_queue_one_job_per_point_and_seed(app, home_copy, store_of) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await _choose(pilot, "preset:finetune: LoRA SFT")
        screen = app.screen
        screen.set_value("sweep_grid", "learning_rate=1e-4,2e-4; lora.r=8,16")
        screen.set_value("sweep_seeds", "0, 1")
        await until(pilot, lambda: "queues 8 jobs" in str(screen.query_one("#preview-text").render()),
                    "the preview of 8 jobs")
        assert "lora.r=16" in str(screen.query_one("#preview-text").render())
        await pilot.press("ctrl+s")
        await settle(pilot)
        specs = _specs(store)
        assert len(specs) == 8
        assert {(s["learning_rate"], s["lora"]["r"], s["seed"]) for _, _, s in specs} == {
            (lr, r, seed) for lr in (1e-4, 2e-4) for r in (8, 16) for seed in (0, 1)
        }


async def test_duplicate_and_edit_starts_from_the_past_job(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobsTable)
        while table.cursor_job_id != ids["failed"]:
            await pilot.press("j")
        await pilot.press("d")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, NewJobScreen)
        assert screen.query_one("#f-model").value == "meta-llama/Llama-3.1-8B"
        assert screen.query_one("#f-name").value == "sft-8b"
        screen.set_value("name", "sft-8b-bs1")
        screen.set_value("gradient_checkpointing", True)
        await until(pilot, lambda: "gradient_checkpointing: true" in str(screen.query_one("#preview-text").render()),
                    "the preview to show the edit")
        await pilot.press("ctrl+s")
        await settle(pilot)
        [(_, name, spec)] = _specs(store)
        with store.read() as s:
            old = json.loads(s.execute(select(Job.spec).where(Job.id == ids["failed"])).scalar_one())
        assert name == "sft-8b-bs1"
        changed = {k for k in old.keys() | spec.keys() if old.get(k) != spec.get(k)}
        assert changed == {"name", "gradient_checkpointing"}


async def test_save_as_file_writes_a_spec_labdeck_submit_accepts(app, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "out" / "h.yaml"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await _choose(pilot, "preset:command: hello")
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("ctrl+u")
        await type_text(pilot, "out/h.yaml")  # relative to the working directory; folders are created
        await pilot.press("enter")
        await settle(pilot)
    exp = expand_file(target)
    assert [d.name for d in exp.drafts] == ["hello"]
    assert exp.drafts[0].spec["command"] == ["python", "-c", "print('hello from labdeck')"]


async def test_escape_goes_back_to_the_menu_then_closes(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await _choose(pilot, "kind:generate")
        assert read_app.focused.id == "f-model"
        await pilot.press("escape")
        await settle(pilot)
        assert read_app.focused.id == "kind-menu"
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(read_app.screen, NewJobScreen)
