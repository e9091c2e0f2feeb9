"""The experiments screen's housekeeping keys: archive and restore, show the archived, delete one whole.

Real store, real run folders (tui_seed_housekeeping.py), keys -> client layer -> store and disk -> screen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from textual.widgets import DataTable
from tui_helpers import make_app, screen_text, settle
from tui_seed_housekeeping import run_bytes, seed_housekeeping

from db.models import Experiment, Job
from db.session import Store
from tui.screens.dialogs import ConfirmScreen
from tui.screens.experiments import ExperimentsScreen
from tui.widgets.jobs_table import JobsTable


@pytest.fixture
def hk_home(tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    home = tmp_path / "home"
    store = Store(home)
    ids = seed_housekeeping(store)
    store.dispose()
    return home, ids


def _rows(app) -> list[str]:  # noqa: ANN001
    return [str(k.value) for k in app.screen.query_one("#experiments-table", DataTable).rows]


async def _experiments_at(pilot, name: str) -> None:  # noqa: ANN001
    """From a fresh app: open the experiments screen (`e`) with the cursor on experiment `name`."""
    await settle(pilot)
    await pilot.press("e")
    await settle(pilot)
    await _to(pilot, name)


async def _to(pilot, name: str) -> None:  # noqa: ANN001
    """Move the experiments cursor onto `name`."""
    table = pilot.app.screen.query_one("#experiments-table", DataTable)
    table.move_cursor(row=[str(k.value) for k in table.rows].index(name), animate=False)
    await settle(pilot)


async def test_a_archives_hides_and_A_shows_then_a_restores(hk_home) -> None:  # noqa: ANN001, N802
    home, ids = hk_home
    app = make_app(home)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        assert set(ids["sweep"]) <= set(app.jobs_screen().query_one(JobsTable).job_ids)
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, ExperimentsScreen) and set(_rows(app)) == {"busy", "lr-sweep"}
        await _to(pilot, "lr-sweep")
        await pilot.press("a")
        await settle(pilot)
        assert _rows(app) == ["busy"]  # hidden from the list
        await pilot.press("A")
        await settle(pilot)
        assert set(_rows(app)) == {"busy", "lr-sweep"}
        assert "lr-sweep (archived)" in screen_text(app) and "archived shown" in screen_text(app)
        await pilot.press("1")  # the jobs screen leaves the archived experiment's jobs out too
        await settle(pilot)
        assert set(app.jobs_screen().query_one(JobsTable).job_ids) == set(ids["busy"])
        assert "archived experiments hidden" in screen_text(app)
        await pilot.press("e")
        await settle(pilot)
        await _to(pilot, "lr-sweep")
        await pilot.press("a")  # on an archived row: restores it
        await settle(pilot)
    store = Store(home)
    with store.read() as s:
        assert s.execute(select(Experiment.archived_at).where(Experiment.name == "lr-sweep")).scalar_one() is None
    store.dispose()
    assert (home / "runs" / str(ids["sweep"][0]) / "outputs" / "model").is_dir()  # never touched


async def test_archiving_an_experiment_with_live_jobs_is_refused_with_one_line(hk_home) -> None:  # noqa: ANN001
    home, _ids = hk_home
    app = make_app(home)
    async with app.run_test(size=(160, 36)) as pilot:
        await _experiments_at(pilot, "busy")
        await pilot.press("a")
        await settle(pilot)
        assert set(_rows(app)) == {"busy", "lr-sweep"}
        assert any("2 jobs still live (running 6, queued 7)" in n.message for n in app._notifications)


async def test_ctrl_d_asks_naming_jobs_and_disk_then_deletes_rows_and_folders(hk_home) -> None:  # noqa: ANN001
    home, ids = hk_home
    app = make_app(home)
    async with app.run_test(size=(120, 36)) as pilot:
        await _experiments_at(pilot, "lr-sweep")
        await pilot.press("ctrl+d")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        total = sum(run_bytes(i) for i in range(4)) + 100  # the failed job's log too
        text = screen_text(app)
        assert "Delete experiment lr-sweep?" in text and "5 jobs" in text and f"{total / 1024:.1f}KB" in text
        await pilot.press("n")  # declined: nothing goes
        await settle(pilot)
        assert all((home / "runs" / str(i)).is_dir() for i in ids["sweep"])
        await pilot.press("ctrl+d")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert _rows(app) == ["busy"]
    assert not any((home / "runs" / str(i)).exists() for i in ids["sweep"] + ids["broken"])
    assert (home / "runs" / str(ids["busy"][0])).parent.is_dir()
    store = Store(home)
    with store.read() as s:
        assert s.execute(select(Job.id).where(Job.id.in_(ids["sweep"]))).all() == []
        assert s.execute(select(Experiment.name)).scalars().all() == ["busy"]
    store.dispose()


async def test_deleting_an_experiment_with_live_jobs_is_refused_before_any_dialog(hk_home) -> None:  # noqa: ANN001
    home, _ids = hk_home
    app = make_app(home)
    async with app.run_test(size=(160, 36)) as pilot:
        await _experiments_at(pilot, "busy")
        await pilot.press("ctrl+d")
        await settle(pilot)
        assert isinstance(app.screen, ExperimentsScreen)
        assert any("before deleting the experiment" in n.message for n in app._notifications)
        assert set(_rows(app)) == {"busy", "lr-sweep"}


async def test_the_detail_artifacts_tab_measures_the_run_folder_and_says_pruned(hk_home) -> None:  # noqa: ANN001
    from tui_seed_housekeeping import CHECKPOINT_BYTES, MODEL_BYTES

    from client import Client
    from tui.render import size_text
    from tui.screens.job_detail import JobDetailScreen

    home, ids = hk_home
    loser = ids["sweep"][3]  # the highest eval_loss
    app = make_app(home)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        app.push_screen(JobDetailScreen(loser))
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        text = screen_text(app)
        assert f"runs/{loser}" in text and f"{size_text(run_bytes(3))} on disk" in text and "checkpoints 1.5K" in text
        assert "pruned" not in text
        plan = Client(home).prune("lr-sweep", 3, "eval_loss")
        assert [i.id for i in plan.prune] == [loser] and plan.bytes == MODEL_BYTES[3] + CHECKPOINT_BYTES
        await app.run_action("reload")
        await settle(pilot)
        text = screen_text(app)
        assert "pruned (weights deleted)" in text and "100B on disk" in text
        await pilot.press("E")  # nothing left to evaluate
        await settle(pilot)
        assert any("was pruned" in n.message for n in app._notifications)


async def test_K_asks_for_n_and_metric_previews_then_prunes(hk_home) -> None:  # noqa: ANN001, N802
    from textual.widgets import Input

    from tui.screens.prune_dialog import PruneScreen

    home, ids = hk_home
    sweep = ids["sweep"]
    app = make_app(home)
    async with app.run_test(size=(120, 36)) as pilot:
        await _experiments_at(pilot, "lr-sweep")
        await pilot.press("K")
        await settle(pilot)
        assert isinstance(app.screen, PruneScreen)
        assert app.screen.query_one("#prune-metric", Input).value == "eval_loss"  # the one metric there is
        assert app.screen.query_one("#prune-mode", Input).value == "min"
        app.screen.query_one("#prune-keep", Input).value = "2"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        text = screen_text(app)
        assert "Delete the weights of 2 fine-tunes of lr-sweep?" in text and f"prune  #{sweep[3]}" in text
        assert "frees 13.7KB" in text
        await pilot.press("y")
        await settle(pilot)
        assert isinstance(app.screen, ExperimentsScreen)
    assert not (home / "runs" / str(sweep[0]) / "outputs" / "model").exists()
    assert (home / "runs" / str(sweep[1]) / "outputs" / "model").is_dir()


def test_the_first_paint_leaves_archived_jobs_out_too(hk_home) -> None:  # noqa: ANN001
    from client import Client
    from tui import fastread

    home, ids = hk_home
    Client(home).archive(["lr-sweep"])
    rows, total, _metrics = fastread.first_page(home / "labdeck.db", 100)
    assert {r.id for r in rows} == set(ids["busy"]) and total == 2
