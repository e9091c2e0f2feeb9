"""Snapshots of the dialogs, the command palette and the recipe screens, at 80×24 and 160×48.

Each run_before waits for the state the test names (the dialog on top, the palette's search
finished, the recipe's preview drawn) before the picture is taken, never for a guessed delay.
Regenerate after an intended change with `--snapshot-update` on these ids, then look at the SVGs.
"""

from __future__ import annotations

import pytest
from test_snapshots import _steps
from textual.command import CommandList, CommandPalette
from textual.widgets import Input, LoadingIndicator, OptionList
from tui_helpers import make_app, palette_searched, settle, until

from tui.screens.dialogs import ChoiceScreen, ConfirmScreen, ExportScreen, PromptScreen
from tui.screens.recipe import RecipeScreen

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])


def _on_top(kind: type, *keys: str):  # noqa: ANN202
    """`_steps(*keys)`, then check that a `kind` dialog is what the picture will show."""
    steps = _steps(*keys)

    async def run(pilot) -> None:  # noqa: ANN001
        await steps(pilot)
        assert isinstance(pilot.app.screen, kind), f"{kind.__name__} is not on top: {pilot.app.screen!r}"

    return run


async def _quiet(pilot) -> None:  # noqa: ANN001
    """No blinking cursor, nothing still moving: the same picture on every run."""
    for inp in pilot.app.screen.query(Input):
        inp.cursor_blink = False
    await pilot.wait_for_scheduled_animations()
    await settle(pilot)


@SIZES
def test_cancel_confirmation(snap_compare, seeded_dir, ids, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_on_top(ConfirmScreen, f"@{ids['running']}", "c"))


@SIZES
def test_delete_confirmation(snap_compare, seeded_dir, ids, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_on_top(ConfirmScreen, f"@{ids['failed']}", "ctrl+d"))


@SIZES
def test_export_dialog(snap_compare, seeded_dir, ids, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_on_top(ExportScreen, f"@{ids['failed']}", "2", "x"))


@SIZES
def test_save_spec_prompt(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    """The New-job form's ctrl+o: a one-line prompt for the file name."""
    app = make_app(seeded_dir[0])
    keys = ("n", "down", "down", "down", "enter", "ctrl+o")
    assert snap_compare(app, terminal_size=size, run_before=_on_top(PromptScreen, *keys))


@SIZES
def test_lineage_choice(snap_compare, pipeline_dir, size) -> None:  # noqa: ANN001
    """A judge's lineage: the jobs it read from, to pick one and open it."""
    judge = pipeline_dir[1]["judge_first"]

    async def run(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        pilot.app.open_job(judge)
        await settle(pilot)
        await pilot.press("L")
        await settle(pilot)
        assert isinstance(pilot.app.screen, ChoiceScreen)
        await _quiet(pilot)

    assert snap_compare(make_app(pipeline_dir[0]), terminal_size=size, run_before=run)


@SIZES
def test_command_palette(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    """ctrl+p on the jobs with a fixed query, once the search has listed every match."""

    async def run(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        await pilot.press("ctrl+p")
        await settle(pilot)
        palette = pilot.app.screen
        assert isinstance(palette, CommandPalette)
        await palette_searched(pilot, "with status")
        hits = palette.query_one(CommandList)
        busy = palette.query_one(LoadingIndicator)
        await until(pilot, lambda: palette.has_class("-ready") and hits.option_count == 7 and hits.highlighted == 0
                    and not busy.has_class("--visible"), "the palette's search for 'with status'")
        await _quiet(pilot)
        assert hits.option_count == 7  # the search does not run on after the picture

    assert snap_compare(make_app(seeded_dir[0]), terminal_size=size, run_before=run)


async def _menu_at(pilot, option_id: str) -> None:  # noqa: ANN001
    """Open the New-job menu and move its cursor onto `option_id` once the recipes are listed."""
    await settle(pilot)
    await pilot.press("n")
    menu = pilot.app.screen.query_one("#kind-menu", OptionList)

    def listed() -> bool:
        try:
            menu.get_option(option_id)
        except Exception:  # noqa: BLE001 - OptionDoesNotExist until the recipes are read
            return False
        return True

    await until(pilot, listed, f"the menu listing {option_id}")
    menu.highlighted = menu.get_option_index(option_id)
    await settle(pilot)


@SIZES
def test_recipe_menu(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    """The `n` menu scrolled to the shipped recipes, one highlighted."""

    async def run(pilot) -> None:  # noqa: ANN001
        await _menu_at(pilot, "recipe:car_teacher_selection:")
        await _quiet(pilot)

    assert snap_compare(make_app(seeded_dir[0]), terminal_size=size, run_before=run)


def _open_from_menu(option_id: str, ready, what: str):  # noqa: ANN001, ANN202
    """A run_before: choose `option_id` in the New-job menu, then wait until `ready(screen)`."""

    async def run(pilot) -> None:  # noqa: ANN001
        await _menu_at(pilot, option_id)
        await pilot.press("enter")
        await until(pilot, lambda: ready(pilot.app.screen), what)
        await _quiet(pilot)

    return run


@SIZES
def test_recipe_form(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    """A shipped recipe's variables with their help and checks, and the preview of what it queues."""
    run = _open_from_menu("recipe:car_teacher_selection:",
                          lambda s: isinstance(s, RecipeScreen) and s.preview is not None, "the recipe's preview")
    assert snap_compare(make_app(seeded_dir[0]), terminal_size=size, run_before=run)


@SIZES
def test_spec_file_prompt(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    """The menu's "a spec file from disk": a prompt that completes paths as they are typed."""
    run = _open_from_menu("file:", lambda s: isinstance(s, PromptScreen), "the spec file prompt")
    assert snap_compare(make_app(seeded_dir[0]), terminal_size=size, run_before=run)
