"""The app as a whole: paging, in-place updates, failures, keys, palette, help, NO_COLOR, imports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import update
from textual.binding import Binding
from tui_helpers import make_app, palette_choose, screen_text, settle, until
from tui_seed import FROZEN

from db.models import Job
from db.queue import enqueue
from db.session import Store
from engine.specfile import expand
from tui.app import LabdeckApp
from tui.screens.help import HelpScreen, binding_groups
from tui.source import Source
from tui.widgets.jobs_table import JobsTable

ROOT = Path(__file__).resolve().parents[2]


def _many(home: Path, n: int) -> Store:
    store = Store(home)
    drafts = expand({"experiment": "bulk", "name": "job", "kind": "command", "command": ["true"],
                     "sweep": {"grid": {"seed": list(range(n))}}}, "t").drafts
    with store.write() as s:
        enqueue(s, drafts)
    return store


async def test_keys_cross_page_boundaries_and_the_table_never_holds_more_than_a_page(tmp_path: Path) -> None:
    store = _many(tmp_path / "home", 250)
    app = make_app(tmp_path / "home")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobsTable)
        assert table.row_count == 100 and table.cursor_job_id == 250
        await pilot.press("end")  # the last row of this page
        await settle(pilot, 1)
        assert table.cursor_job_id == 151
        await pilot.press("j")  # past it: the next page, cursor on its first row
        await settle(pilot)
        assert table.row_count == 100 and table.cursor_job_id == 150
        assert "jobs 101–200 of 250" in screen_text(app)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert table.row_count == 50 and table.cursor_job_id == 50
        await pilot.press("k")  # before the first row: the previous page, cursor on its last row
        await settle(pilot)
        assert table.cursor_job_id == 51 and "jobs 101–200 of 250" in screen_text(app)
    store.dispose()


async def test_a_refresh_updates_cells_in_place_and_keeps_the_cursor(app, home_copy, ids) -> None:  # noqa: ANN001
    store = Store(home_copy)
    async with app.run_test(size=(160, 30)) as pilot:  # wide enough for the ETA column next to full names
        await settle(pilot)
        table = app.screen.query_one(JobsTable)
        while table.cursor_job_id != ids["running"]:
            await pilot.press("j")
        row_before, scroll_before = table.cursor_row, table.scroll_y
        cleared = []
        original_clear = table.clear
        table.clear = lambda *a, **k: cleared.append(1) or original_clear(*a, **k)  # type: ignore[method-assign]
        with store.write() as s:
            s.execute(update(Job).where(Job.id == ids["running"]).values(progress_done=900.0, eta_s=200.0))
        app.action_reload()  # what the once-a-second poll does when the store changed
        await settle(pilot)
        assert "90%" in str(table.get_cell(str(ids["running"]), "progress"))
        assert str(table.get_cell(str(ids["running"]), "eta")) == "3m20s"
        assert (table.cursor_row, table.scroll_y, table.cursor_job_id) == (row_before, scroll_before, ids["running"])
        assert cleared == []  # updated cell by cell, never rebuilt
    store.dispose()


async def test_a_new_job_appears_without_moving_the_cursor_off_its_job(app, home_copy, ids) -> None:  # noqa: ANN001
    store = Store(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobsTable)
        while table.cursor_job_id != ids["failed"]:
            await pilot.press("j")
        with store.write() as s:
            enqueue(s, expand({"experiment": "x", "name": "late", "kind": "command", "command": ["true"]}).drafts)
        app.action_reload()
        await settle(pilot)
        assert table.job_ids[0] == 19 and table.cursor_job_id == ids["failed"]
    store.dispose()


class FlakySource(Source):
    """Fails the first jobs-page read, as a locked or unreadable store would."""

    failures = 1

    def jobs_page(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if self.failures:
            self.failures -= 1
            raise OSError("disk I/O error")
        return super().jobs_page(*args, **kwargs)


async def test_a_failed_refresh_shows_a_notice_and_the_app_goes_on(seeded_dir) -> None:  # noqa: ANN001
    source = FlakySource(store=Store(seeded_dir[0]), clock=lambda: FROZEN)
    app = make_app(seeded_dir[0], source=source)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        assert any("disk I/O error" in n.message for n in app._notifications)
        assert app.is_running
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert app.screen.query_one(JobsTable).row_count == 18


async def test_help_lists_every_binding_with_its_id(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(100, 200)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(read_app.screen, HelpScreen)
        text = screen_text(read_app)
        ids = [b.id for _, bindings in binding_groups(LabdeckApp) for b in bindings]
        assert ids and all(i in text for i in ids), [i for i in ids if i not in text]
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(read_app.screen, HelpScreen)


def test_every_binding_has_a_description_and_a_unique_id() -> None:
    from tui.widgets.choice import Choice

    groups = binding_groups(LabdeckApp) + [("choice", [b for b in Choice.BINDINGS if isinstance(b, Binding)])]
    seen: set[str] = set()
    for title, bindings in groups:
        for b in bindings:
            assert b.description, (title, b.key)
            assert b.id and b.id not in seen, (title, b.key, b.id)
            seen.add(b.id)


async def test_palette_runs_any_action_by_name(app, home_copy, ids) -> None:  # noqa: ANN001
    store = Store(home_copy)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(JobsTable)
        while table.cursor_job_id != ids["failed"]:
            await pilot.press("j")
        await pilot.press("ctrl+p")
        await settle(pilot)
        await palette_choose(pilot, "retry")
        await settle(pilot)
        with store.read() as s:
            assert s.get(Job, 19).parent_id == ids["failed"]
        await pilot.press("ctrl+p")
        await palette_choose(pilot, "status: failed")
        await settle(pilot)
        assert table.job_ids == [ids["failed"]]
    store.dispose()


async def test_palette_lists_every_shown_action_of_the_screen(read_app) -> None:  # noqa: ANN001
    from tui.commands import LabdeckCommands

    async with read_app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        provider = LabdeckCommands(read_app.screen, None)
        names = {name for name, _, _ in provider._commands()}
        for wanted in ("Open", "Filter", "Cancel", "Retry", "Duplicate & edit", "Priority up", "Priority down", "Sort",
                       "Mark", "Compare marked specs", "New job", "Results", "GPUs", "Pause/resume queue",
                       "Drain queue", "Help", "Quit", "Results: car-teachers", "Jobs with status: failed"):
            assert wanted in names, wanted


async def test_gpus_screen_shows_who_holds_what(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        text = screen_text(read_app)
        assert "job 16 lora-prompt" in text and "foreign jupyter (alice)" in text and "87 %" in text
        await pilot.press("escape")
        await settle(pilot)
        assert read_app.screen.query(JobsTable)


async def test_no_color_keeps_levels_readable(seeded_dir, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(seeded_dir[0])
    assert app.no_color
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        app.screen.choose("car-teachers")
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        text = screen_text(app)
        assert "░" in text and "▓" in text  # shades stand in for colours


def test_the_app_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, tui.app, tui.screens.job_detail, tui.screens.new_job, tui.screens.results, "
        "tui.screens.gpus, tui.screens.help, tui.source; "
        "bad = [m for m in ('torch', 'transformers', 'accelerate', 'peft', 'datasets') if m in sys.modules]; "
        "print(json.dumps(bad))"
    )
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert json.loads(out.stdout) == []


def test_importing_the_app_does_not_load_the_store() -> None:
    """The first frame comes before SQLAlchemy's import cost: the store loads in a worker thread."""
    code = "import sys, tui.app; print('sqlalchemy' in sys.modules, 'textual_plotext' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_run_app_starts_the_worker_off_the_event_loop_and_survives_its_absence(tmp_path: Path) -> None:
    """`ensure_worker` may be missing or fail: a notice, not a crash (in a thread, not on the loop)."""
    import asyncio

    from tui.app import LabdeckApp

    class NoWorker(Source):
        calls: list[str] = []

        def ensure_worker(self) -> bool:
            import threading

            self.calls.append(threading.current_thread().name)
            raise NotImplementedError("the worker arrives with issue 3")

    src = NoWorker(store=Store(tmp_path / "h"), clock=time.time)
    app = LabdeckApp(src, start_worker=True, refresh_s=0)

    async def go() -> None:
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await settle(pilot)
            assert any("No worker started" in n.message for n in app._notifications)

    asyncio.run(go())
    assert NoWorker.calls and NoWorker.calls[0] != "MainThread"


def test_the_cold_start_reads_agree_with_the_store(seeded_dir) -> None:  # noqa: ANN001
    """tui.fastread (plain sqlite3, before SQLAlchemy is imported) answers as db.queries does."""
    from dataclasses import asdict

    from tui.source import JobQuery

    cold = Source(seeded_dir[0], clock=lambda: FROZEN)
    assert cold.cold
    fast_page, fast_view = cold.jobs_page(JobQuery()), cold.overview()
    assert cold.cold  # answered without opening the store
    warm = Source(store=Store(seeded_dir[0]), clock=lambda: FROZEN)
    page, view = warm.jobs_page(JobQuery()), warm.overview()
    assert [asdict(r) for r in fast_page.rows] == [asdict(r) | {"status": str(r.status.value if hasattr(r.status, "value") else r.status)} for r in page.rows]
    assert (fast_page.total, fast_page.metrics) == (page.total, page.metrics)
    assert asdict(fast_view.worker) == asdict(view.worker)
    assert [asdict(g) for g in fast_view.gpus] == [asdict(g) for g in view.gpus]
    assert (fast_view.counts, fast_view.experiments, fast_view.gpus_at) == (view.counts, view.experiments, view.gpus_at)
    cold.warm_up()
    assert not cold.cold


async def test_after_the_first_screenful_the_store_and_screens_warm_up(home_copy) -> None:  # noqa: ANN001
    """The first page comes from tui.fastread; then a thread opens the store so the next key is quick."""
    source = Source(home_copy, clock=lambda: FROZEN)
    app = make_app(home_copy, source=source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await until(pilot, lambda: not source.cold and "tui.screens.new_job" in sys.modules, "the warm-up")
        assert app.screen.query_one(JobsTable).row_count == 18
