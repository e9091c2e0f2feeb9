"""Queue a shipped recipe or a spec file from the `n` menu: variables with their help, a preview, ctrl+s."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from textual.widgets import Input, OptionList
from tui_helpers import make_app, screen_text, settle, type_text

from db.models import Experiment, Job
from db.session import Store
from engine.recipes import recipe_path
from tui.recipes import check_value, preview, recipe_vars
from tui.screens.recipe import RecipeScreen, complete_path


def test_variables_carry_the_recipes_comments_as_help() -> None:
    fields = {f.name: f for f in recipe_vars(recipe_path("car_teacher_selection"))}
    assert fields["beta"].value == "1.0" and "UNPINNED" in fields["beta"].help
    assert fields["rm3"].value == "Skywork/Skywork-Reward-Gemma-2-27B" and "CAR" in fields["rm3"].help


def test_values_are_checked_as_paths_or_hub_ids(tmp_path: Path) -> None:
    (tmp_path / "data.jsonl").write_text("{}\n")
    assert check_value(str(tmp_path / "data.jsonl")) == (True, "local path")
    assert check_value("Qwen/Qwen2.5-7B-Instruct") == (True, "hub id: downloads on the box")
    ok, why = check_value(str(tmp_path / "missing.jsonl"))
    assert not ok and "missing.jsonl: no such" in why
    assert check_value("1.0") == (True, "")


def test_the_preview_says_what_would_be_queued_and_downloaded() -> None:
    p = preview(recipe_path("car_teacher_selection"), {}, None)
    assert p.error is None and p.experiment == "car-teacher-selection"
    stages = {s: (n, g) for s, n, g in p.stages}
    assert stages["generate"][1] == 4  # a 70B teacher shards over 4 GPUs
    assert "Skywork/Skywork-Reward-Gemma-2-27B" in p.downloads
    tiny = preview(recipe_path("expo"), {}, "tiny")
    assert tiny.error is None and tiny.downloads == [] and tiny.jobs > 0
    bad = preview(recipe_path("expo"), {"no_such_var": "1"}, None)
    assert bad.error is not None and "no_such_var" in bad.error


def test_path_completion_lists_the_folder(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text("x: 1\n")
    (tmp_path / "sub").mkdir()
    assert complete_path(f"{tmp_path}/sw") == f"{tmp_path}/sweep.yaml"
    assert complete_path(f"{tmp_path}/su") == f"{tmp_path}/sub/"
    assert complete_path(f"{tmp_path}/zz") is None


async def _choose(pilot, option_id: str) -> None:  # noqa: ANN001
    menu = pilot.app.screen.query_one("#kind-menu", OptionList)
    menu.highlighted = menu.get_option_index(option_id)
    await pilot.press("enter")
    await settle(pilot)


async def test_queue_a_recipes_tiny_variant_from_the_menu(home_copy) -> None:  # noqa: ANN001
    app = make_app(home_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert "recipe expo · tiny" in screen_text(app) or app.screen.query_one("#kind-menu", OptionList).get_option("recipe:expo:tiny")
        await _choose(pilot, "recipe:expo:tiny")
        screen = app.screen
        assert isinstance(screen, RecipeScreen)
        text = screen_text(app)
        assert "queues" in text and "merge" in text and "downloads: nothing" in text
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, RecipeScreen)
    store = Store(home_copy)
    with store.read() as s:
        names = s.execute(select(Job.name).join(Experiment).where(Experiment.name.like("expo%"))).scalars().all()
    store.dispose()
    assert any(n.startswith("merge[") for n in names)


async def test_a_spec_file_from_disk_with_a_variable_changed(home_copy, tmp_path: Path) -> None:  # noqa: ANN001
    spec = tmp_path / "hello.yaml"
    spec.write_text("experiment: from-disk\nname: greet\nkind: command\nvars:\n  word: hi   # what to print\n"
                    "command: [echo, '${vars.word}']\n")
    app = make_app(home_copy)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await _choose(pilot, "file:")
        await type_text(pilot, str(spec))
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RecipeScreen)
        assert "what to print" in screen_text(app)
        box = screen.query_one("#var-word", Input)
        box.value = "bonjour"
        await settle(pilot)
        await pilot.press("ctrl+s")
        await settle(pilot)
    store = Store(home_copy)
    with store.read() as s:
        spec_text = s.execute(select(Job.spec).where(Job.name == "greet")).scalar_one()
    store.dispose()
    assert '"bonjour"' in spec_text
