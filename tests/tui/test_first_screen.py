"""The first screen a user sees: results on the experiment's own metric and axes, and a jobs table
whose columns follow what it shows (full pipeline job names at 120 columns)."""

from __future__ import annotations

from sqlalchemy import delete, select
from textual.widgets import Select
from tui_helpers import make_app, screen_text, settle
from tui_seed_pipeline import finish_judges

from db.experiments import main_view, pick_axes, pick_metric
from db.models import Job, Metric
from db.rows import JobRow
from db.session import Store
from tui.screens.results import ResultsScreen
from tui.widgets.job_columns import layout
from tui.widgets.jobs_table import JobsTable


def _row(i: int, name: str, experiment: str = "demo-car", kind: str = "score", status: str = "queued") -> JobRow:
    return JobRow(i, experiment, name, kind, status, 0, 0, "", 1, 0.0, None, None, None, None, None, None, {})


# ------------------------------------------------------------------ plain functions


def test_axes_put_the_shorter_axis_on_rows_and_pool_seeds() -> None:
    params = [{"stage": "judge", "teacher": t, "student": s, "seed": k}
              for t in ("a", "b", "c") for s in ("x", "y") for k in (0, 1)]
    assert pick_axes(params) == ("student", "teacher")
    assert pick_axes([{"alpha": a} for a in (0.1, 0.2)]) == ("alpha", None)
    assert pick_axes([{"stage": "build"}]) == (None, None)
    three = [{"m": m, "k": k, "t": t} for m in range(4) for k in range(2) for t in range(3)]
    assert pick_axes(three) == ("k,t", "m")


def test_main_metric_is_the_outcome_not_bookkeeping() -> None:
    assert pick_metric(["discrete_win_rate", "lc_win_rate", "mean_length", "win_rate"]) == "win_rate"
    assert pick_metric(["finished_fraction", "mean_response_tokens", "records"]) == "finished_fraction"
    assert pick_metric(["bleu", "bleu_std", "records"]) == "bleu"
    assert pick_metric([]) is None


def test_constant_columns_hide_and_the_name_gets_the_room() -> None:
    names = [f"judge[teacher=teacher-{t},student=student-{s}]" for t in "abc" for s in ("llama", "qwen")]
    rows = [_row(i, n) for i, n in enumerate(names, 1)]
    cols = layout(rows, 120, metric=None)
    keys = [c.key for c in cols]
    assert "experiment" not in keys and "kind" not in keys and "gpus" not in keys  # one value on every row
    name = next(c for c in cols if c.key == "name")
    assert name.width >= max(map(len, names))
    assert sum(c.width + 2 for c in cols) + 1 <= 120
    mixed = rows + [_row(9, "probe", "calibration", "finetune")]
    keys = [c.key for c in layout(mixed, 120, metric=None)]
    assert "experiment" in keys


def test_narrow_terminals_drop_the_least_useful_columns_first() -> None:
    rows = [_row(i, "x" * 30, experiment=f"e{i}", kind="score" if i % 2 else "merge", status="running") for i in range(1, 5)]
    rows = [JobRow(*[*r.__dict__.values()][:10], 1.0, None, 1.0, 2.0, 30.0, None, {}) for r in rows]
    wide = [c.key for c in layout(rows, 160, metric=None)]
    narrow = [c.key for c in layout(rows, 80, metric=None)]
    assert {"eta", "kind", "elapsed", "experiment"} <= set(wide)
    assert "eta" not in narrow and "kind" not in narrow
    assert {"id", "name", "status", "progress"} <= set(narrow)
    assert sum(c.width + 2 for c in layout(rows, 80, metric=None)) + 1 <= 80


def test_main_view_of_the_pipeline_is_the_judges_win_rate_by_student_and_teacher(pipeline_dir) -> None:  # noqa: ANN001
    store = Store(pipeline_dir[0])
    try:
        with store.read() as s:
            view = main_view(s, "demo-car")
            assert (view.metric, view.stage, view.rows, view.cols) == ("win_rate", "judge", "student", "teacher")
            assert main_view(s, "no-such").metric is None
    finally:
        store.dispose()


# ------------------------------------------------------------------ the app


async def _results(pilot) -> ResultsScreen:  # noqa: ANN001
    await pilot.press("2")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ResultsScreen)
    return screen


async def test_results_open_on_win_rate_and_follow_when_the_judges_report(pipeline_copy) -> None:  # noqa: ANN001
    store = Store(pipeline_copy)
    with store.write() as s:  # back to before any judge reported: only the generations' bookkeeping
        judges = select(Job.id).where(Job.name.like("judge%"))
        s.execute(delete(Metric).where(Metric.job_id.in_(judges)))
    app = make_app(pipeline_copy)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        screen = await _results(pilot)
        assert screen.experiment == "demo-car"
        assert screen.metric == "finished_fraction"
        finish_judges(store)  # the last stage completes
        app.action_reload()
        await settle(pilot)
        assert (screen.metric, screen.rows_field, screen.cols_field) == ("win_rate", "student", "teacher")
        assert screen.pivot.row_labels == ["student-llama", "student-qwen"]
        assert screen.pivot.col_labels == ["teacher-a", "teacher-b", "teacher-c"]
        assert screen.pivot.missing == 0  # the other stages' jobs are not "missing" a judge's metric
        text = screen_text(app)
        assert "student \\ teacher" in text and "0.33" in text
    store.dispose()


async def test_a_metric_the_person_chose_stays_when_a_better_default_appears(pipeline_copy) -> None:  # noqa: ANN001
    store = Store(pipeline_copy)
    app = make_app(pipeline_copy)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        screen = await _results(pilot)
        assert screen.metric == "win_rate"
        screen.query_one("#sel-metric", Select).value = "finished_fraction"
        await settle(pilot)
        assert screen.metric == "finished_fraction"
        finish_judges(store)
        app.action_reload()
        await settle(pilot)
        assert screen.metric == "finished_fraction"
    store.dispose()


async def test_jobs_table_shows_full_pipeline_names_at_120_columns(pipeline_dir) -> None:  # noqa: ANN001
    app = make_app(pipeline_dir[0])
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "judge[teacher=teacher-c,student=student-llama]" in text
        assert "compat[teacher=teacher-a,student=student-qwen]" in text
        keys = [c.key for c in app.screen.query_one(JobsTable)._columns]
        assert "experiment" not in keys  # one experiment on every row: no column repeating it
