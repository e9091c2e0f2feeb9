"""Snapshots of every screen on the seeded scene with a frozen clock, at 80×24 and at 160×48.

Regenerate after an intended change with `pytest tests/tui/test_snapshots.py --snapshot-update`,
then look at the SVGs under `__snapshots__/` before committing them.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input
from tui_helpers import make_app, settle

from tui.widgets.jobs_table import JobsTable

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])


def _steps(*keys: str, after=None):  # noqa: ANN001, ANN202
    """A run_before that settles, presses `keys` one by one (settling after each), then `after`."""

    async def run(pilot) -> None:  # noqa: ANN001
        await settle(pilot)
        for key in keys:
            if key.startswith("@"):  # move the jobs cursor onto a job id
                table = pilot.app.screen.query_one(JobsTable)
                while table.cursor_job_id != int(key[1:]):
                    await pilot.press("down")
                continue
            await pilot.press(key)
            await settle(pilot)
        if after is not None:
            after(pilot.app)
            await settle(pilot)
        for inp in pilot.app.screen.query(Input):  # a blinking cursor would make snapshots flaky
            inp.cursor_blink = False
        await settle(pilot)

    return run


def _win_rate(app) -> None:  # noqa: ANN001
    app.screen.query_one("#sel-metric").value = "win_rate"


@SIZES
def test_jobs(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(seeded_dir[0]), terminal_size=size, run_before=_steps())


@SIZES
def test_job_detail_running(snap_compare, seeded_dir, ids, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_steps(f"@{ids['running']}", "enter"))


@SIZES
def test_new_job_form(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_steps("n", "down", "down", "down", "enter"))


@SIZES
def test_results_table(snap_compare, seeded_dir, ids, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_steps(f"@{ids['failed']}", "2", after=_win_rate))


@SIZES
def test_gpus(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(seeded_dir[0]), terminal_size=size, run_before=_steps("3"))


@SIZES
def test_help(snap_compare, seeded_dir, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(seeded_dir[0]), terminal_size=size, run_before=_steps("question_mark"))


# ------------------------------------------------------------------ more views, at 80×24 only


def test_job_detail_log(snap_compare, seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, run_before=_steps(f"@{ids['running']}", "enter", "l"))


def test_job_detail_charts_160(snap_compare, seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=(160, 48), run_before=_steps(f"@{ids['running']}", "enter", "g"))


def test_job_detail_failed(snap_compare, seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, run_before=_steps(f"@{ids['failed']}", "enter"))


def test_new_job_menu(snap_compare, seeded_dir) -> None:  # noqa: ANN001
    assert snap_compare(make_app(seeded_dir[0]), run_before=_steps("n"))


def test_results_heatmap(snap_compare, seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, run_before=_steps(f"@{ids['failed']}", "2", "h", after=_win_rate))


def test_results_bars(snap_compare, seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, run_before=_steps(f"@{ids['failed']}", "2", "b", after=_win_rate))


def test_results_spec_diff(snap_compare, seeded_dir, ids) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, run_before=_steps(f"@{ids['failed']}", "2", "v", after=_win_rate))


def test_compare_marked_jobs(snap_compare, seeded_dir) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, run_before=_steps("@3", "space", "space", "space", "v"))


def test_jobs_no_color(snap_compare, seeded_dir, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(make_app(seeded_dir[0]), run_before=_steps())


def test_results_heatmap_no_color(snap_compare, seeded_dir, ids, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(seeded_dir[0])
    assert snap_compare(app, run_before=_steps(f"@{ids['failed']}", "2", "h", after=_win_rate))


@SIZES
def test_empty_home_with_the_worker_offline(snap_compare, home, size) -> None:  # noqa: ANN001
    """A first start: no jobs, no worker (the app is not allowed to start one here)."""
    assert snap_compare(make_app(home), terminal_size=size, run_before=_steps())


@SIZES
def test_job_detail_spec_tab(snap_compare, seeded_dir, ids, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_steps(f"@{ids['running']}", "enter", "s"))



@SIZES
def test_job_detail_artifacts_tab(snap_compare, seeded_dir, ids, size) -> None:  # noqa: ANN001
    app = make_app(seeded_dir[0])
    assert snap_compare(app, terminal_size=size, run_before=_steps(f"@{ids['running']}", "enter", "a"))
