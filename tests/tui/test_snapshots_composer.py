"""Snapshots of the composer at 80×24 and 160×48: a DPO fine-tune (its fields, the fold opened by the
field finder) and the field finder itself. The plain SFT form is `test_snapshots.py::test_new_job_form`.

Regenerate with `--snapshot-update` on these test ids, then look at the SVGs before committing them.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tui_helpers import make_app, palette_searched, settle, until

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])


def _finetune(method: str, find: str, choose: bool):  # noqa: ANN202
    """Open the fine-tune form, pick `method` with the keys, then look for `find` in the field finder
    (and choose the first match when `choose`)."""

    async def run(pilot) -> None:  # noqa: ANN001
        app = pilot.app
        await settle(pilot)
        await pilot.press("n", "down", "down", "down", "enter")
        await settle(pilot)
        app.screen.query_one("#f-method").focus()
        await pilot.pause()
        while app.screen.query_one("#f-method").value != method:
            await pilot.press("right")
        await settle(pilot)
        await pilot.press("ctrl+f")
        await settle(pilot)
        await palette_searched(pilot, find)
        if choose:
            await pilot.press("enter")
            # The finder focuses the field and scrolls to it once the fold is laid out: wait for that
            # state itself (on a loaded machine it takes more than one refresh).
            await until(pilot, lambda: _in_view(app, f"f-{find}"), f"{find} focused and in view")
        for inp in app.screen.query(Input):  # a blinking cursor would make snapshots flaky
            inp.cursor_blink = False
        await settle(pilot)

    return run


def _in_view(app, editor_id: str) -> bool:  # noqa: ANN001
    """The focused widget is `editor_id` and every scrolling container above it shows all of it."""
    w = app.focused
    if w is None or w.id != editor_id:
        return False
    return all(a.can_view_entire(w) for a in w.ancestors if getattr(a, "is_scrollable", False)
               and hasattr(a, "can_view_entire"))


@SIZES
def test_new_job_form_dpo(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_finetune("dpo", "dpo_beta", choose=True))


@SIZES
def test_new_job_field_finder(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_finetune("sft", "warm", choose=False))
