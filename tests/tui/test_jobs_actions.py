"""Keys pressed on the jobs screen → the store changed → the screen shows it."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy import select
from tui_helpers import screen_text, settle, type_text

from db.models import Job
from db.queries import worker_state
from tui.screens.dialogs import ConfirmScreen
from tui.widgets.jobs_table import JobsTable


def _job(store, job_id: int) -> SimpleNamespace:  # noqa: ANN001
    """The job's columns as plain values (a read session expires ORM objects when it ends)."""
    with store.read() as s:
        job = s.execute(select(Job).where(Job.id == job_id)).scalar_one()
        return SimpleNamespace(**{c: getattr(job, c) for c in Job.model_fields})


async def _cursor_to(pilot, job_id: int) -> JobsTable:  # noqa: ANN001
    table = pilot.app.screen.query_one(JobsTable)
    for _ in range(200):
        if table.cursor_job_id == job_id:
            return table
        await pilot.press("j")
        await settle(pilot, 1)
    raise AssertionError(f"job {job_id} not reachable")


def _cell(table: JobsTable, job_id: int, column: str) -> str:
    return str(table.get_cell(str(job_id), column))


async def test_jobs_screen_lists_every_job(read_app, ids) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = read_app.screen.query_one(JobsTable)
        assert table.row_count == 18
        assert table.cursor_job_id == 18  # newest first
        text = screen_text(read_app)
        assert "jobs 1–18 of 18" in text
        assert "worker ● running" in text
        assert _cell(table, ids["running"], "status") == "running"


async def test_cancel_asks_first_and_cancels_a_queued_job(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = await _cursor_to(pilot, ids["queued"])
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # changed my mind
        await settle(pilot)
        assert _job(store, ids["queued"]).status == "queued"
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert _job(store, ids["queued"]).status == "cancelled"
        assert _cell(table, ids["queued"], "status") == "cancelled"
        assert table.cursor_job_id == ids["queued"]  # the cursor stayed on its job


async def test_cancel_a_running_job_sets_the_flag_the_worker_honours(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _cursor_to(pilot, ids["running"])
        await pilot.press("c", "y")
        await settle(pilot)
        job = _job(store, ids["running"])
        assert job.status == "running" and job.cancel_requested


async def test_retry_a_failed_job_queues_a_new_attempt_and_selects_it(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _cursor_to(pilot, ids["failed"])
        await pilot.press("r")
        await settle(pilot)
        new = _job(store, 19)
        assert new.parent_id == ids["failed"] and new.attempt == 2 and new.status == "queued"
        table = app.screen.query_one(JobsTable)
        assert table.cursor_job_id == 19
        assert _cell(table, 19, "status") == "queued"


async def test_retry_of_a_running_job_is_refused_with_a_notice(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await _cursor_to(pilot, ids["running"])
        await pilot.press("r")
        await settle(pilot)
        with store.read() as s:
            assert s.execute(select(Job.id).where(Job.id == 19)).first() is None
        assert any("cannot be retried" in n.message for n in app._notifications)


async def test_delete_asks_first_and_removes_a_finished_job_and_its_folder(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    folder = home_copy / "runs" / str(ids["failed"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "log.txt").write_text("boom\n")
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await _cursor_to(pilot, ids["running"])
        await pilot.press("ctrl+d", "y")  # a running job is refused, with the reason
        await settle(pilot)
        assert _job(store, ids["running"]).status == "running"
        assert any("cannot be deleted; cancel it first" in n.message for n in app._notifications)
        table = await _cursor_to(pilot, ids["failed"])
        await pilot.press("ctrl+d")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot, 3)
        with store.read() as s:
            assert s.execute(select(Job.id).where(Job.id == ids["failed"])).first() is None
        assert not folder.exists()
        assert str(ids["failed"]) not in [str(k.value) for k in table.rows]


async def test_priority_up_and_down(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _cursor_to(pilot, ids["queued"])
        await pilot.press("plus")
        await settle(pilot)
        await pilot.press("plus")
        await settle(pilot)
        assert _job(store, ids["queued"]).priority == 2
        await pilot.press("minus")
        await settle(pilot)
        assert _job(store, ids["queued"]).priority == 1
        # sorted in queue order, the raised job now comes after the priority-5 one and before the rest
        for _ in range(2):
            await pilot.press("s")
            await settle(pilot)
        assert app.screen.query_spec.sort == "queue"
        assert app.screen.query_one(JobsTable).job_ids[:2] == [ids["queued_high"], ids["queued"]]


async def test_pause_resume_and_drain_the_queue(app, home_copy, store_of) -> None:  # noqa: ANN001
    store = store_of(home_copy)

    def state() -> str:
        with store.read() as s:
            return worker_state(s).queue_state

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert state() == "paused"
        assert "queue ⏸ paused" in screen_text(app)
        await pilot.press("p")
        await settle(pilot)
        assert state() == "running"
        assert "queue running" in screen_text(app)
        await pilot.press("D")
        await settle(pilot)
        assert state() == "draining"
        assert "draining" in screen_text(app)


async def test_filter_by_text_and_by_status(read_app, ids) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = read_app.screen.query_one(JobsTable)
        await pilot.press("slash")
        await type_text(pilot, "status:failed")
        await pilot.press("enter")
        await settle(pilot)
        assert table.job_ids == [ids["failed"]]
        assert "filter status:failed" in screen_text(read_app)
        assert table.has_focus
        await pilot.press("slash")
        await pilot.press("ctrl+u")
        await type_text(pilot, "lora")
        await pilot.press("enter")
        await settle(pilot)
        assert table.job_ids == [ids["running"]]
        await pilot.press("escape")
        await settle(pilot)
        assert table.row_count == 18


async def test_mark_two_jobs_and_compare_their_specs(read_app) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        await _cursor_to(pilot, 2)
        await pilot.press("space")  # marks 2, moves to 1
        await pilot.press("space")
        await settle(pilot)
        assert read_app.screen.marked == {1, 2}
        await pilot.press("v")
        await settle(pilot)
        from tui.screens.compare import CompareScreen
        from tui.widgets.spec_diff import SpecDiff

        assert isinstance(read_app.screen, CompareScreen)
        diff = read_app.screen.query_one(SpecDiff)
        fields = [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)]
        assert fields == ["name", "seed"]  # the two seeds of one sweep point differ in nothing else
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(read_app.screen, CompareScreen)


async def test_quit_leaves_jobs_as_they_are(app, home_copy, store_of, ids) -> None:  # noqa: ANN001
    store = store_of(home_copy)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code in (0, None)
    assert _job(store, ids["running"]).status == "running"
    assert not _job(store, ids["running"]).cancel_requested
