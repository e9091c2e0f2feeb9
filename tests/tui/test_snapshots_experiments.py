"""Snapshots of the experiment-level views on the half-finished demo pipeline (tui_seed_pipeline.py),
at 80×24 and 160×48: the jobs table with content-sized columns, the results' first screen, the
experiments list with its pipeline preview, and one experiment's pipeline grid, and a deep matrix as a tree.

Regenerate after an intended change with `--snapshot-update`, then look at the SVGs.
"""

from __future__ import annotations

import pytest
from test_pipeline_tree import seed as seed_deep
from test_snapshots import _steps
from tui_helpers import make_app

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])


@SIZES
def test_pipeline_jobs(snap_compare, pipeline_dir, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(pipeline_dir[0]), terminal_size=size, run_before=_steps())


@SIZES
def test_results_first_screen(snap_compare, pipeline_dir, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(pipeline_dir[0]), terminal_size=size, run_before=_steps("2"))


@SIZES
def test_experiments(snap_compare, pipeline_dir, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(pipeline_dir[0]), terminal_size=size, run_before=_steps("e"))


@SIZES
def test_pipeline_grid(snap_compare, pipeline_dir, size) -> None:  # noqa: ANN001
    assert snap_compare(make_app(pipeline_dir[0]), terminal_size=size, run_before=_steps("e", "enter", "right", "right"))


@SIZES
def test_pipeline_tree(snap_compare, tmp_path, size) -> None:  # noqa: ANN001
    """Three matrix axes: the pipeline opens as a tree, unfolded down to the failed job."""
    home = tmp_path / "home"
    seed_deep(home)
    assert snap_compare(make_app(home), terminal_size=size, run_before=_steps("e", "enter"))
