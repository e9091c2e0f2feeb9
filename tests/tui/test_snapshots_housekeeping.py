"""Snapshots of the experiments screen's delete confirmation (jobs and disk it frees) at 80×24 and 160×48,
on the housekeeping home (tui_seed_housekeeping.py: sizes of real files, the frozen clock).

Regenerate after an intended change with `--snapshot-update`, then look at the SVGs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_snapshots import _steps
from tui_helpers import make_app
from tui_seed_housekeeping import seed_housekeeping

from db.session import Store

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])


@pytest.fixture(scope="module")
def hk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("housekeeping") / "home"
    store = Store(home)
    seed_housekeeping(store)
    store.checkpoint()
    store.dispose()
    return home


@SIZES
def test_delete_experiment_confirmation(snap_compare, hk_dir, size) -> None:  # noqa: ANN001
    # busy (running) sorts first; lr-sweep is the finished one the dialog is about
    assert snap_compare(make_app(hk_dir), terminal_size=size, run_before=_steps("e", "down", "ctrl+d"))
