"""The app's twins of `labdeck plot`: overlaid loss curves of marked jobs, and metric-vs-field lines in results."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_helpers import settle, until

from db.models import JobStatus
from db.queue import claim, enqueue, record_metrics, transition
from db.session import Store
from engine.specfile import expand


@pytest.fixture
def sweep_home(tmp_path: Path) -> tuple[Path, list[int]]:
    home = tmp_path / "home"
    store = Store(home)
    exp = expand({"experiment": "lr", "name": "sft", "kind": "finetune", "model": "m", "dataset": "d.jsonl",
                  "sweep": {"grid": {"learning_rate": [1e-5, 1e-4]}, "seeds": [0, 1]}})
    with store.write() as s:
        ids = enqueue(s, exp.drafts, resolve=exp.resolver(home))
    rows = []
    for k, jid in enumerate(ids):
        with store.write() as s:
            claim(s, jid, host="box", run_dir=str(home / "runs" / str(jid)))
            transition(s, jid, JobStatus.succeeded, exit_code=0)
        rows += [{"job_id": jid, "name": "loss", "step": st, "value": 3.0 - st / (10 + k), "time": 0.0} for st in range(1, 6)]
        rows.append({"job_id": jid, "name": "win_rate", "step": None, "value": 0.3 + 0.2 * (k // 2) + 0.01 * (k % 2),
                     "time": 0.0})
    with store.write() as s:
        record_metrics(s, rows)
    store.dispose()
    return home, ids


def _app(home: Path):  # noqa: ANN202
    from tui.app import LabdeckApp
    from tui.source import Source

    return LabdeckApp(Source(store=Store(home)), start_worker=False, refresh_s=0)


async def test_compare_overlays_the_loss_curves_of_marked_jobs(sweep_home) -> None:  # noqa: ANN001
    from tui.screens.compare import CompareScreen
    from tui.widgets.charts import MetricChart

    home, ids = sweep_home
    app = _app(home)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        specs = app.source.specs(ids[:3])
        app.push_screen(CompareScreen(specs))
        await settle(pilot)
        chart = app.screen.query_one("#compare-curves", MetricChart)
        await until(pilot, lambda: bool(chart.series), "the compared jobs' curves")
        assert list(chart.series) == [f"#{i}" for i in ids[:3]]
        assert all(len(pts) == 5 for pts in chart.series.values()) and not chart.has_class("hidden")


async def test_results_lines_draw_the_metric_against_a_numeric_field(sweep_home) -> None:  # noqa: ANN001
    from tui.screens.results import ResultsScreen
    from tui.widgets.charts import MetricChart

    home, _ = sweep_home
    app = _app(home)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        screen.choose("lr", metric="win_rate", rows="learning_rate", cols=None)
        await until(pilot, lambda: screen.pivot is not None and bool(screen.pivot.cells), "the pivot of lr")
        await pilot.press("l")
        await settle(pilot)
        chart = screen.query_one("#lines-chart", MetricChart)
        (pts,) = chart.series.values()
        assert [x for x, _ in pts] == [1e-5, 1e-4]
        assert [round(y, 3) for _, y in pts] == [0.305, 0.505]  # mean over the two seeds
