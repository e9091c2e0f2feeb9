"""Job detail (log, charts, failure reason) and results (pivot, heatmap, bars, diff, export)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable
from tui_helpers import make_app, screen_text, settle, type_text, until

from db.formats import RENDERERS
from db.queries import experiment_metric
from db.results import pivot
from db.session import Store
from tui.screens.dialogs import ExportScreen
from tui.screens.job_detail import JobDetailScreen
from tui.screens.results import ResultsScreen
from tui.widgets.charts import MetricChart
from tui.widgets.jobs_table import JobsTable
from tui.widgets.log_tail import LogTail


async def _open(pilot, job_id: int) -> JobDetailScreen:  # noqa: ANN001
    table = pilot.app.screen.query_one(JobsTable)
    while table.cursor_job_id != job_id:
        await pilot.press("down")
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, JobDetailScreen)
    return pilot.app.screen


async def test_detail_of_a_running_job_shows_progress_gpus_log_and_charts(read_app, ids) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, ids["running"])
        text = screen_text(read_app)
        assert "62%" in text and "ETA 18m20s" in text and "GPU 0" in text and "job 16 lora-prompt" in text
        await pilot.press("l")
        await settle(pilot)
        log = screen.query_one(LogTail)
        assert log.line_count == 63 and log.lines[-1] == "step 620 loss 0.5500"
        await pilot.press("g")
        await settle(pilot)
        charts = [c for c in screen.query(MetricChart) if not c.has_class("hidden")]
        assert [list(c.series) for c in charts] == [["loss"], ["learning_rate"], ["tokens_per_s"]]
        assert len(charts[0].series["loss"]) == 63
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(read_app.screen, JobDetailScreen)


async def test_log_tail_follows_new_lines_in_batches(app, home_copy, ids) -> None:  # noqa: ANN001
    log_path = home_copy / "runs" / str(ids["running"]) / "log.txt"
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, ids["running"])
        await pilot.press("l")
        await settle(pilot)
        log = screen.query_one(LogTail)
        with open(log_path, "a") as fh:
            fh.write("".join(f"step {s} loss 0.5\n" for s in range(630, 1630, 10)))
            fh.write("partial line without newline")
        def read() -> bool:  # the half-second tail timer, or a nudge when no read is in flight
            screen._poll_log()
            return log.line_count >= 163

        await until(pilot, read, "the appended lines in the tail")
        assert log.line_count == 163
        assert log.lines[-1] == "step 1620 loss 0.5"  # the partial line waits for its newline


async def test_failed_job_shows_reason_and_last_log_lines(read_app, ids) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await _open(pilot, ids["failed"])
        text = screen_text(read_app)
        assert "cuda_oom: CUDA out of memory" in text
        assert "last log lines" in text and "torch.OutOfMemoryError" in text


async def test_results_pivot_heatmap_bars_and_diff(read_app, ids) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = read_app.screen.query_one(JobsTable)
        while table.cursor_job_id != ids["failed"]:
            await pilot.press("down")
        await pilot.press("2")  # results of the experiment under the cursor
        await settle(pilot)
        screen = read_app.screen
        assert isinstance(screen, ResultsScreen) and screen.experiment == "car-teachers"
        screen.query_one("#sel-metric").value = "win_rate"
        await settle(pilot)
        p = screen.pivot
        # students (2) as rows, teachers (3) as columns: the fewer values on rows
        assert (p.metric, p.rows_field, p.cols_field) == ("win_rate", "model.path", "dataset.path")
        cell = p.cells[("llama-3.2-1b", "gemma-2-9b.jsonl")]
        assert cell.n == 2 and abs(cell.mean - 0.515) < 1e-9
        grid = screen.query_one("#view-table", DataTable)
        assert grid.row_count == 2 and "0.515 ± 0.011" in screen_text(read_app)
        await pilot.press("h")
        await settle(pilot)
        assert "scale" in screen_text(read_app) and "0.358" in screen_text(read_app)
        await pilot.press("b")
        await settle(pilot)
        assert "■ gemma-2-9b.jsonl" in screen_text(read_app)  # the legend: one colour per column (teacher)
        await pilot.press("f")  # swap rows and columns
        await settle(pilot)
        assert (screen.pivot.rows_field, screen.pivot.cols_field) == ("dataset.path", "model.path")
        await pilot.press("v")
        await settle(pilot)
        diff = screen.query_one("#view-diff", DataTable)
        fields = [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)]
        assert "dataset.path" in fields and "model.path" in fields and "seed" in fields
        assert "lora.r" in fields  # the failed 8B run has no LoRA: it differs
        assert "learning_rate" not in fields  # the same everywhere: hidden


async def test_export_the_pivot_to_csv_markdown_and_latex(read_app, seeded_dir, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(tmp_path)  # a relative file name lands in the working directory, as in a shell
    home, _ = seeded_dir
    store = Store(home)
    with store.read() as s:
        rows = experiment_metric(s, "car-teachers", "win_rate", "last")
    store.dispose()
    expected = pivot(rows, "car-teachers", "win_rate", "model.path", "dataset.path", "last")
    async with read_app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = read_app.screen
        screen.choose("car-teachers")
        await settle(pilot)
        screen.query_one("#sel-metric").value = "win_rate"
        await settle(pilot)
        for downs, fmt, ext in ((0, "csv", "csv"), (1, "markdown", "md"), (2, "latex", "tex")):
            await pilot.press("x")
            await settle(pilot)
            assert isinstance(read_app.screen, ExportScreen)
            await pilot.press(*(["down"] * downs))
            await pilot.press("tab", "ctrl+u")
            target = tmp_path / f"t.{ext}"
            await type_text(pilot, target.name)
            await pilot.press("enter")
            await settle(pilot)
            assert target.read_text() == RENDERERS[fmt](expected), fmt
        assert r"\toprule" in (tmp_path / "t.tex").read_text()


async def test_results_of_a_calibration_recipe_show_the_subject_heatmap(tmp_path: Path) -> None:
    """A metric family ('auroc/*', one metric per MMLU subject) pivots as subjects x (model, method)."""
    from db.models import JobStatus
    from db.queue import claim, enqueue, record_metrics, transition
    from engine.specfile import expand_file

    store = Store(tmp_path / "home")
    exp = expand_file(Path(__file__).parents[2] / "engine" / "recipes" / "calibration.yaml")  # 6 models x 4 methods
    with store.write() as s:
        ids = enqueue(s, exp.drafts, exp.resolver(store.home))
    rows = []
    for n, (jid, d) in enumerate(zip(ids, exp.drafts, strict=True)):
        with store.write() as s:
            claim(s, jid, gpus=[], host="box", run_dir=str(store.home / "runs" / str(jid)))
            transition(s, jid, JobStatus.succeeded, exit_code=0)
        if d.params["stage"] in ("zero_shot", "evaluate"):
            for k, subject in enumerate(("nutrition", "virology", "machine_learning")):
                rows.append({"job_id": jid, "name": f"auroc/{subject}", "step": None, "value": 0.5 + 0.01 * (n + k), "time": 1.0})
    with store.write() as s:
        record_metrics(s, rows)
    store.dispose()
    app = make_app(tmp_path / "home")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        screen.choose("calibration", "auroc/*")
        await settle(pilot)
        p = screen.pivot
        assert (p.metric, p.rows_field, p.cols_field) == ("auroc/*", "group", "method,model")
        assert p.row_labels == ["machine_learning", "nutrition", "virology"] and len(p.col_labels) == 24
        assert "zero_shot · mistral-7b" in p.col_labels and all(c.n == 1 for c in p.cells.values())
        await pilot.press("h")
        await settle(pilot)
        text = screen_text(app)
        assert "scale" in text and "virology" in text


async def test_charts_offer_ema_smoothing(read_app, ids) -> None:  # noqa: ANN001
    async with read_app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        screen = await _open(pilot, ids["running"])
        await pilot.press("g", "m")
        await settle(pilot)
        charts = [c for c in screen.query(MetricChart) if not c.has_class("hidden")]
        assert all(c.smoothing == 0.6 for c in charts)
        await pilot.press("m", "m", "m")  # 0.9, 0.99, off
        await settle(pilot)
        assert all(c.smoothing == 0.0 for c in screen.query(MetricChart))
