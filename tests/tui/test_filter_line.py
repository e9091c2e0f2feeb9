"""The `/` filter line both list screens share (tui/widgets/filter_line.py): typing filters without
enter once the keys stop, the line sits above the key bar, and escape empties it."""

from __future__ import annotations

from textual.widgets import DataTable
from tui_helpers import make_app, settle, type_text, until

from tui.widgets.filter_line import FilterLine
from tui.widgets.jobs_table import JobsTable


async def test_typing_filters_the_jobs_without_enter(seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobsTable)
        await pilot.press("slash")
        line = app.screen.query_one(FilterLine)
        assert line.has_focus and line.region.y == 24 - 2  # just above the key bar
        await type_text(pilot, "status:failed")
        await until(pilot, lambda: table.job_ids == [ids["failed"]], "the debounced filter")
        assert line.has_focus  # still typing: the keys stay in the line
        await pilot.press("escape")
        await until(pilot, lambda: table.row_count == 18, "every job back")
        assert line.value == "" and not line.display and table.has_focus


async def test_typing_filters_the_experiments_without_enter(seeded_dir) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("e", "slash")
        await settle(pilot)
        table = app.screen.query_one("#experiments-table", DataTable)
        await type_text(pilot, "status:failed")
        await until(pilot, lambda: [str(k.value) for k in table.rows] == ["car-teachers"], "the debounced filter")
        await pilot.press("escape")  # empties the filter, stays on the experiments
        await until(pilot, lambda: table.row_count == 3, "every experiment back")
        assert app.screen.query_one(FilterLine).value == ""
        await pilot.press("escape")  # nothing left to clear: back to the jobs
        await settle(pilot)
        assert app.screen.query(JobsTable)
