"""Helpers for the app's pilot tests: the app on a home, wait until it has settled, read the screen as text.

Importable from any test (pyproject.toml puts tests/tui on the path), so no test imports a conftest.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console
from tui_seed import FROZEN


def _frozen() -> float:
    return FROZEN


def make_app(home: Path, *, source: Any = None, **kwargs: Any) -> Any:
    """The app on `home` with the scene's frozen clock, no worker and no refresh timer unless asked."""
    from db.session import Store
    from tui.app import LabdeckApp
    from tui.source import Source

    kwargs.setdefault("start_worker", False)
    kwargs.setdefault("refresh_s", 0)
    return LabdeckApp(source or Source(store=Store(home), clock=_frozen), **kwargs)


async def settle(pilot, rounds: int = 4) -> None:  # noqa: ANN001 - textual.pilot.Pilot
    """Let every thread worker finish and every message it posted be handled (a few rounds:
    a poll leads to a page load, which may lead to a chart load)."""
    from textual.worker import WorkerCancelled

    app = pilot.app
    for _ in range(rounds):
        await pilot.pause()
        for _attempt in range(5):
            try:  # an exclusive load replaced by a newer one is cancelled: that is not a failure
                await app.workers.wait_for_complete()
                for screen in app.screen_stack:
                    await screen.workers.wait_for_complete() if hasattr(screen, "workers") else None
                break
            except WorkerCancelled:
                await pilot.pause()
        await pilot.pause()


def screen_text(app) -> str:  # noqa: ANN001
    """What the terminal shows, as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


async def until(pilot, predicate, what: str, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    """Let the app run until `predicate()` holds (a debounced check, an asynchronous load): waits for
    the state itself, not for a guessed delay; fails after `timeout_s` naming what never happened."""
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} never happened"
        await pilot.pause(0.02)
        await settle(pilot, 1)


async def type_text(pilot, text: str) -> None:  # noqa: ANN001
    """Type `text` key by key, as a person would."""
    from textual.keys import _character_to_key

    await pilot.press(*(_character_to_key(c) if not c.isalnum() else c for c in text))


async def palette_searched(pilot, query: str, timeout_s: float = 10.0) -> None:  # noqa: ANN001
    """Type `query` into the open command palette and wait until the search *for the whole query*
    has finished and listed a match. The palette searches asynchronously after each key, so until
    the last search ends the list may still hold an earlier prefix's hits ("gradc" lists
    gradient_accumulation_steps before gradient_checkpointing): choosing then picks the wrong one,
    and a snapshot shows the wrong list."""
    import time

    from textual.command import CommandInput, CommandList

    await type_text(pilot, query)
    palette = pilot.app.screen
    group = getattr(palette, "_GATHER_COMMANDS_GROUP", None)

    def ready() -> bool:
        found = palette.query(CommandList)
        if not found or palette.query_one(CommandInput).value != query:
            return False
        if any(w.group == group and not w.is_finished for w in palette.workers):
            return False  # a search is still running (or queued): the list may be an earlier prefix's
        hits = found.first()
        if not hits.option_count or hits.highlighted is None:
            return False
        chosen = str(hits.get_option_at_index(hits.highlighted).prompt).lower()
        letters = iter(chosen)  # the hit fuzzy-matches the whole query: its letters appear in order
        return all(c in letters for c in query.lower() if not c.isspace())

    deadline = time.monotonic() + timeout_s
    while not ready():
        assert time.monotonic() < deadline, f"the palette listed nothing for {query!r}"
        await pilot.pause(0.05)


async def palette_choose(pilot, query: str, timeout_s: float = 10.0) -> None:  # noqa: ANN001
    """Type `query` into the open command palette and run the first match of the finished search."""
    await palette_searched(pilot, query, timeout_s)
    await pilot.press("enter")
