"""The experiments screen, one experiment's pipeline, and why a queued job waits: keys -> store -> screen."""

from __future__ import annotations

from sqlalchemy import select
from textual.widgets import DataTable
from tui_helpers import make_app, screen_text, settle, type_text

from db.experiments import experiment_rows, pipeline
from db.models import Job, JobStatus
from db.queue import set_queue_state
from db.rows import GpuInfo
from db.session import Store
from tui.render import state_bar
from tui.screens.experiments import ExperimentsScreen
from tui.screens.job_detail import JobDetailScreen
from tui.screens.pipeline import PipelineScreen
from tui.screens.results import ResultsScreen
from tui.waiting import box_warning, short_reason


def test_experiment_rows_aggregate_jobs_by_state_in_sql(pipeline_dir) -> None:  # noqa: ANN001
    store = Store(pipeline_dir[0])
    try:
        with store.read() as s:
            rows, total = experiment_rows(s)
            assert total == 1
            r = rows[0]
            assert (r.name, r.jobs) == ("demo-car", 31)
            assert r.counts == {"succeeded": 17, "running": 2, "queued": 9, "failed": 1, "skipped": 2}
            assert abs(r.progress - (20 + 2 * 30 / 48) / 31) < 1e-9  # finished jobs plus the running ones' fractions
            assert r.description.startswith("CAR teacher selection")
            assert experiment_rows(s, statuses=("interrupted",))[1] == 0
            assert experiment_rows(s, text="miniature")[1] == 1  # the description matches too
            p = pipeline(s, "demo-car")
            assert p.stages == ["build", "generate", "quality", "compat", "sft", "answer", "judge"]
            assert p.axes == ["teacher", "student"] and len(p.points) == 6
            assert p.needs["answer"] == ["sft"] and p.needs["build"] == []
            # a stage over fewer axes feeds every point: the teacher's generation under both students
            assert [j.name for j in p.cell("generate", ("teacher-b", "student-qwen"))] == ["generate[teacher=teacher-b]"]
    finally:
        store.dispose()


def test_state_bar_gives_every_present_state_a_cell() -> None:
    bar = state_bar({"succeeded": 98, "failed": 1, "queued": 1}, 10)
    assert bar.cell_len == 10 and "▒" in bar.plain and "░" in bar.plain


async def test_e_lists_experiments_and_enter_opens_the_pipeline(pipeline_dir) -> None:  # noqa: ANN001
    app = make_app(pipeline_dir[0])
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, ExperimentsScreen)
        text = screen_text(app)
        assert "demo-car" in text and "✔17 ▶2 …9 ✘1 ↷2" in text and "CAR teacher selection" in text
        for stage in ("build", "generate", "quality", "compat", "sft", "answer", "judge"):  # the preview under the list
            assert stage in text
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PipelineScreen)
        grid = screen.query_one("#pipeline-grid", DataTable)
        assert grid.row_count == 7 and len(grid.columns) == 2 + 6
        assert "teacher-a" in screen_text(app)
        await pilot.press("down", "down", "down", "down", "enter")  # sft, first point: a finished fine-tune
        await settle(pilot)
        assert isinstance(app.screen, JobDetailScreen)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("2")  # the experiment's results
        await settle(pilot)
        assert isinstance(app.screen, ResultsScreen) and app.screen.experiment == "demo-car"


async def test_the_experiments_filter_keeps_matching_experiments(seeded_dir) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("e", "slash")
        await type_text(pilot, "status:failed")
        await pilot.press("enter")
        await settle(pilot)
        table = app.screen.query_one("#experiments-table", DataTable)
        assert [str(k.value) for k in table.rows] == ["car-teachers"]
        await pilot.press("escape")
        await settle(pilot)
        assert table.row_count == 3


async def test_retry_a_stage_brings_back_what_its_failure_skipped(pipeline_copy, pipeline_dir) -> None:  # noqa: ANN001
    failed = pipeline_dir[1]["sft_failed"]
    app = make_app(pipeline_copy)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("e", "enter")
        await settle(pilot)
        await pilot.press("down", "down", "down", "down", "r")  # the sft stage
        await settle(pilot)
    store = Store(pipeline_copy)
    with store.read() as s:
        retried = s.execute(select(Job.id, Job.name, Job.status).where(Job.parent_id.is_not(None))).all()
        original = s.execute(select(Job.status).where(Job.id == failed)).scalar_one()
    store.dispose()
    names = sorted(n for _, n, _ in retried)
    assert original == JobStatus.failed
    assert names == ["answer[teacher=teacher-c,student=student-qwen]", "judge[teacher=teacher-c,student=student-qwen]",
                     "sft[teacher=teacher-c,student=student-qwen]"]
    assert all(st == JobStatus.queued for *_, st in retried)


async def test_cancel_what_remains_asks_then_stops_queued_and_running_jobs(pipeline_copy) -> None:  # noqa: ANN001
    app = make_app(pipeline_copy)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("e", "enter")
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert "Cancel the 11 queued or running jobs of demo-car?" in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
    store = Store(pipeline_copy)
    with store.read() as s:
        queued = s.execute(select(Job.id).where(Job.status == "queued")).all()
        stopping = s.execute(select(Job.id).where(Job.cancel_requested.is_(True))).all()
    store.dispose()
    assert queued == [] and len(stopping) == 2  # the two running compat jobs: the worker stops them


# ------------------------------------------------------------------ why is it waiting


def test_box_warning_says_when_a_job_asks_for_more_than_the_box_has() -> None:
    h100 = GpuInfo(0, "H100", 81559.0, 0.0, 0.0)
    assert "the box has no GPU" in box_warning(1, 0, 0, [])
    assert "the box has 1" in box_warning(2, 40 * 1024, 0, [h100])
    assert "with 40 GB free" in box_warning(2, 40 * 1024, 0, [h100])
    assert box_warning(1, 40 * 1024, 0, [h100]) is None
    assert box_warning(0, 0, 0, []) is None


async def test_queued_jobs_say_why_they_wait_in_the_table_and_the_detail(seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        page = app.screen.query_one("#jobs-table").page
        # GPU 0 runs our fine-tune, GPU 1 holds someone's notebook: the 1-GPU probe waits for ours
        assert page.reasons[ids["queued"]] == "waiting for 1 GPU(s) held by running jobs"
        assert short_reason(page.reasons[ids["queued"]]) == "GPUs busy"
        assert "GPUs busy" in screen_text(app)
        app.open_job(ids["queued"])
        await settle(pilot)
        assert "waiting   waiting for 1 GPU(s) held by running jobs" in screen_text(app)


async def test_a_paused_queue_and_a_missing_dependency_are_reasons(pipeline_copy) -> None:  # noqa: ANN001
    store = Store(pipeline_copy)
    with store.write() as s:
        set_queue_state(s, "paused")
    store.dispose()
    app = make_app(pipeline_copy)
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(pilot)
        reasons = app.screen.query_one("#jobs-table").page.reasons
        answer = next(r for r in app.screen.query_one("#jobs-table").page.rows
                      if r.name == "answer[teacher=teacher-b,student=student-llama]")
        assert reasons[answer.id].startswith("queue paused; waiting for job ")
        assert "(sft[teacher=teacher-b,student=student-llama], queued)" in reasons[answer.id]


async def test_lineage_jumps_to_the_jobs_a_job_read_from_and_fed(pipeline_dir) -> None:  # noqa: ANN001
    app = make_app(pipeline_dir[0])
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        sft = next(r for r in app.screen.query_one("#jobs-table").page.rows
                   if r.name == "sft[teacher=teacher-a,student=student-llama]")
        app.open_job(sft.id)
        await settle(pilot)
        text = screen_text(app)
        assert "reads from" in text and "generate[teacher=teacher-a]" in text
        assert "read by" in text and "answer[teacher=teacher-a,student=student-llama]" in text
        await pilot.press("L")
        await settle(pilot)
        await pilot.press("end", "enter")  # the last: the job that read its model
        await settle(pilot)
        assert isinstance(app.screen, JobDetailScreen) and app.screen.job_id == sft.id + 6
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("E")  # evaluate this checkpoint: a generate job on its model, in the composer
        await settle(pilot)
        assert "Evaluate job" in screen_text(app) and "generate" in screen_text(app)


def test_jobs_behind_the_planned_head_of_a_long_queue_say_so(pipeline_dir) -> None:  # noqa: ANN001
    from db.waiting import queue_view
    from tui.waiting import reasons

    store = Store(pipeline_dir[0])
    try:
        with store.read() as s:
            full = queue_view(s, 1_750_000_000.0)
            head = queue_view(s, 1_750_000_000.0, limit=3)
    finally:
        store.dispose()
    assert not full.truncated and head.truncated and len(head.queued) == 3
    last = full.queued[-1].id
    assert reasons(head, [last]) == {last: "no worker running; behind 3+ queued jobs"}
    assert reasons(full, [last])[last].startswith("no worker running; waiting for job ")


def test_the_experiments_list_reads_cold_without_opening_the_store(pipeline_dir, seeded_dir) -> None:  # noqa: ANN001
    """`e` pressed before the store is open: the first page comes from plain sqlite3 and says what the
    store would (filters and archived flags included)."""
    from tui.source import Source

    for home in (pipeline_dir[0], seeded_dir[0]):
        for kwargs in ({}, {"text": "car"}, {"statuses": ("failed",)}, {"archived": None}, {"archived": True}):
            cold = Source(home)
            fast = cold.experiments(**kwargs)
            assert cold.cold, "answered without importing and opening the store"
            warm = Source(store=Store(home))
            page = warm.experiments(**kwargs)
            assert (fast.rows, fast.total) == (page.rows, page.total), kwargs
            warm.store.dispose()
    assert Source(seeded_dir[0]).experiments().rows[0].counts  # not vacuous: rows with jobs by state
