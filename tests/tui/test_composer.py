"""The composer fits the method: the fields that apply, the common ones first, a finder, saved specs."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select
from textual.widgets import OptionList
from tui_helpers import make_app, palette_choose, screen_text, settle, type_text, until

from cli.main import main as cli_main
from db.models import Job
from db.session import Store
from tui import spec_fields as SF
from tui.saved_specs import SpecNameError, exists, list_specs, save_spec
from tui.screens.dialogs import ConfirmScreen, PromptScreen
from tui.screens.new_job import NewJobScreen
from tui.screens.recipe import RecipeScreen


async def _choose(pilot, option_id: str) -> None:  # noqa: ANN001
    menu = pilot.app.screen.query_one("#kind-menu", OptionList)
    menu.highlighted = menu.get_option_index(option_id)
    await pilot.press("enter")
    await settle(pilot)


async def _new_job(pilot, option_id: str) -> None:  # noqa: ANN001
    """From a fresh app: open the New-job menu (`n`) and choose `option_id` from it."""
    await settle(pilot)
    await pilot.press("n")
    await settle(pilot)
    await _choose(pilot, option_id)


def _shown(screen, name: str) -> bool:  # noqa: ANN001
    return screen.query_one(f"#f-{name}").display and screen.query_one(f"#row-{name}").display


def test_the_lora_block_is_a_switch_with_a_field_per_setting() -> None:
    base = {"experiment": "e", "name": "n", "model": "m", "dataset": "d.jsonl"}
    raw = SF.editor_values("finetune", {**base, "lora": {"r": 64, "alpha": 16, "target_modules": ["q_proj"]}})
    assert (raw["lora"], raw["lora.r"], raw["lora.target_modules"]) == (True, "64", "[q_proj]")
    assert SF.collect("finetune", raw)[0]["lora"] == {"r": 64, "target_modules": ["q_proj"]}  # alpha 16: the default
    raw["lora.r"] = "0"
    assert SF.validate("finetune", raw).errors == {"lora.r": "lora.r: Input should be greater than or equal to 1"}
    raw["lora"] = False  # off: its fields leave the spec, and merge_lora with them
    raw["merge_lora"] = True
    assert "lora" not in SF.collect("finetune", raw)[0] and "merge_lora" not in SF.collect("finetune", raw)[0]


async def test_lora_sft_shows_the_lora_fields_and_not_dpos_and_keeps_what_was_typed(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(160, 48)) as pilot:
        await _new_job(pilot, "preset:finetune: LoRA SFT")
        screen = read_app.screen
        assert screen.query_one("#f-lora").value is True
        assert _shown(screen, "lora") and _shown(screen, "lora-r") and _shown(screen, "lora-alpha")
        assert _shown(screen, "merge_lora")
        assert not _shown(screen, "dpo_beta") and not _shown(screen, "chosen_field")
        assert not _shown(screen, "calibration_style") and not _shown(screen, "validation")
        # switch to DPO with the keys: its fields appear; type a beta
        screen.query_one("#f-method").focus()
        await pilot.press("right")
        await settle(pilot)
        assert screen.query_one("#f-method").value == "dpo"
        assert _shown(screen, "dpo_beta") and _shown(screen, "reference") and _shown(screen, "lora")
        screen.form.focus_field("dpo_beta")
        await pilot.press("ctrl+u")
        await type_text(pilot, "0.25")
        await until(pilot, lambda: "dpo_beta: 0.25" in str(screen.query_one("#preview-text").render()),
                    "the preview showing the beta")
        # back to SFT: the beta hides and leaves the spec, but its text stays for a return to DPO
        screen.query_one("#f-method").focus()
        await pilot.press("left")
        await until(pilot, lambda: "method: dpo" not in str(screen.query_one("#preview-text").render()),
                    "the preview back on SFT")
        assert not _shown(screen, "dpo_beta")
        assert "dpo_beta" not in str(screen.query_one("#preview-text").render())
        screen.query_one("#advanced").collapsed = True
        await pilot.press("right")
        await settle(pilot)
        assert _shown(screen, "dpo_beta") and screen.query_one("#f-dpo_beta").value == "0.25"
        assert not screen.form.folded  # the beta came back with its value: the fold opens to show it


async def test_gpus_is_within_the_first_ten_tab_stops(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await _new_job(pilot, "kind:finetune")
        read_app.screen.query_one("#f-experiment").focus()
        await pilot.pause()
        seen = [read_app.focused.id]
        for _ in range(10):
            await pilot.press("tab")
            seen.append(read_app.focused.id)
            if read_app.focused.id == "f-gpus":
                break
        assert seen[-1] == "f-gpus", seen
        assert seen == ["f-experiment", "f-name", "f-method", "f-model", "f-dataset", "f-learning_rate", "f-epochs",
                        "f-max_steps", "f-gpus"]
        await pilot.press("tab")  # then the LoRA switch; its fields wait until it is on
        assert read_app.focused.id == "f-lora" and not read_app.screen.query_one("#f-lora-r").display
        assert read_app.screen.form.folded  # the rest waits under Advanced
        assert "Advanced · 35 more fields" in screen_text(read_app)


async def test_typing_a_field_name_jumps_to_it_and_unfolds_its_section(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await _new_job(pilot, "kind:finetune")
        screen = read_app.screen
        assert screen.form.folded
        await pilot.press("ctrl+f")
        await palette_choose(pilot, "gradchk")

        def shown(editor_id: str) -> bool:  # focused and scrolled into view (after the fold's layout)
            w = read_app.focused
            return w is not None and w.id == editor_id and screen.form.region.contains_region(w.region)

        await until(pilot, lambda: shown("f-gradient_checkpointing"), "gradient_checkpointing focused and in view")
        assert read_app.screen is screen and not screen.form.folded
        await pilot.press("ctrl+f")
        await palette_choose(pilot, "gpus")
        await until(pilot, lambda: shown("f-gpus"), "gpus focused and in view")


async def test_an_error_inside_advanced_unfolds_it(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await _new_job(pilot, "kind:finetune")
        screen = read_app.screen
        await type_text(pilot, "Qwen/Qwen2.5-0.5B")
        screen.set_value("dataset", "data/train.jsonl")
        await until(pilot, lambda: "✔ valid" in str(screen.query_one("#form-status").render()), "a valid form")
        assert screen.form.folded
        screen.set_value("warmup_steps", "-5")
        await until(pilot, lambda: screen.query_one("#row-warmup_steps").has_class("-invalid"),
                    "warmup_steps marked invalid")
        assert not screen.form.folded


async def test_a_past_job_with_advanced_values_opens_unfolded(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        read_app.open_new_job({"kind": "finetune", "model": "m", "dataset": "d.jsonl"}, "Plain")
        await settle(pilot)
        assert read_app.screen.form.folded
        read_app.screen.dismiss(None)
        await settle(pilot)
        read_app.open_new_job({"kind": "finetune", "model": "m", "dataset": "d.jsonl", "gradient_checkpointing": True},
                              "With an advanced value")
        await settle(pilot)
        assert not read_app.screen.form.folded


def test_saved_spec_names_cannot_leave_the_folder(tmp_path: Path) -> None:
    for bad in ("../evil", "a/b", ".hidden", "..", "", "x" * 101):
        with pytest.raises(SpecNameError):
            save_spec(tmp_path, bad, "kind: command\n")
    assert not (tmp_path / "evil.yaml").exists() and not (tmp_path / "specs" / "a").exists()
    assert not exists(tmp_path, "lora-sft")
    path = save_spec(tmp_path, "lora-sft.yaml", "description: LoRA on the small model\nkind: command\n")
    assert exists(tmp_path, "lora-sft") and not exists(tmp_path, "../lora-sft")
    assert path == tmp_path / "specs" / "lora-sft.yaml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    [spec] = list_specs(tmp_path)
    assert (spec.name, spec.description) == ("lora-sft", "LoRA on the small model")


def _jobs(home: Path) -> list[tuple[str, dict]]:
    store = Store(home)
    with store.read() as s:
        rows = s.execute(select(Job.id, Job.name, Job.spec).order_by(Job.id)).all()
    store.dispose()
    return [(n, json.loads(sp)) for _, n, sp in rows]


async def test_a_saved_spec_is_listed_in_the_menu_and_queues_what_the_cli_queues(home_copy, tmp_path: Path) -> None:  # noqa: ANN001
    before = len(_jobs(home_copy))
    app = make_app(home_copy)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await _new_job(pilot, "preset:finetune: LoRA SFT")
        screen = app.screen
        screen.set_value("description", "LoRA SFT, two seeds")
        screen.set_value("sweep_seeds", "0, 1")
        await until(pilot, lambda: "queues 2 jobs" in str(screen.query_one("#preview-text").render()), "2 jobs")
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("ctrl+u")
        await type_text(pilot, "../outside")  # refused in one line, nothing written
        await pilot.press("enter")
        await settle(pilot)
        assert not (home_copy / "outside.yaml").exists() and not list((home_copy / "specs").glob("*"))
        assert any("Not saved: '../outside'" in n.message for n in app._notifications)
        await pilot.press("ctrl+t")
        await settle(pilot)
        await pilot.press("ctrl+u")
        await type_text(pilot, "lora-two-seeds")
        await pilot.press("enter")
        await settle(pilot)
        saved = home_copy / "specs" / "lora-two-seeds.yaml"
        assert saved.is_file() and stat.S_IMODE(os.stat(saved).st_mode) == 0o600
        first = saved.read_text()
        screen.set_value("description", "LoRA SFT, two seeds (v2)")
        for answer, expected in (("n", first), ("y", None)):  # the same name again: asked, and only a yes replaces
            await pilot.press("ctrl+t")
            await settle(pilot)
            await pilot.press("ctrl+u")
            await type_text(pilot, "lora-two-seeds")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the replace question")
            assert "Replace the saved spec 'lora-two-seeds'?" in screen_text(app)
            await pilot.press(answer)
            await settle(pilot)
            assert app.screen is screen
            if expected is not None:
                assert saved.read_text() == expected
                assert any("already has 'lora-two-seeds'" in n.message for n in app._notifications)
        await until(pilot, lambda: "(v2)" in saved.read_text(), "the spec replaced after the yes")
        assert any("it replaced the one saved before" in n.message for n in app._notifications)
        await pilot.press("escape")  # back to the menu, which now lists it with its description
        await settle(pilot)
        menu = app.screen.query_one("#kind-menu", OptionList)
        assert "LoRA SFT, two seeds (v2)" in str(menu.get_option("saved:lora-two-seeds").prompt)
        await _choose(pilot, "saved:lora-two-seeds")
        assert isinstance(app.screen, RecipeScreen)
        await until(pilot, lambda: "queues 2 jobs" in screen_text(app), "the preview of the saved spec")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, (RecipeScreen, NewJobScreen))
    from_app = _jobs(home_copy)[before:]
    other = tmp_path / "cli-home"
    assert cli_main(["submit", str(saved), "--home", str(other), "--no-worker"]) == 0
    from_cli = _jobs(other)
    assert len(from_app) == 2 and from_app == from_cli
