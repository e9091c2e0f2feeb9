"""A deep matrix (three axes) opens as a tree: stage → axis values → jobs; `t` switches to the grid."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import update
from textual.widgets import DataTable, Tree
from tui_helpers import make_app, screen_text, settle, until

from db.models import Job, JobStatus
from db.queue import enqueue
from db.session import Store
from engine.specfile import expand
from tui.screens.job_detail import JobDetailScreen
from tui.screens.pipeline import PipelineScreen

SPEC = {
    "experiment": "deep",
    "matrix": {"lr": [{"name": "lr1"}, {"name": "lr2"}], "data": [{"name": "d1"}, {"name": "d2"}],
               "seed": [{"name": "s1"}, {"name": "s2"}]},
    "defaults": {"gpus": 0},
    "stages": [
        {"name": "prep", "kind": "command", "foreach": "data",
         "command": [sys.executable, "-c", "pass", "${matrix.data.name}"]},
        {"name": "train", "kind": "command", "needs": ["prep"], "foreach": ["data", "lr", "seed"],
         "command": [sys.executable, "-c", "pass", "${matrix.lr.name}", "${matrix.data.name}", "${matrix.seed.name}"]},
    ],
}


def seed(home: Path) -> list[int]:
    store = Store(home)
    exp = expand(SPEC)
    with store.write() as s:
        ids = enqueue(s, exp.drafts, resolve=exp.resolver(home))
        s.execute(update(Job).where(Job.id == ids[-1]).values(status=JobStatus.failed))
    store.dispose()
    return ids


async def test_three_axes_open_as_a_tree_whose_leaves_open_jobs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ids = seed(home)
    assert len(ids) == 2 + 8
    app = make_app(home)
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(pilot)
        await pilot.press("e", "enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, PipelineScreen)
        await until(pilot, lambda: screen.pipeline is not None, "the pipeline loaded")
        tree = screen.query_one("#pipeline-tree", Tree)
        assert tree.display and not screen.query_one("#pipeline-grid", DataTable).display
        text = screen_text(app)
        assert "prep" in text and "train" in text and "waits on prep" in text
        # The branch down to the failed job opens by itself (data=d2 → lr=lr2 → seed=s2, the last job
        # queued): what a person opens the pipeline to look at; the rest stays folded.
        failed_line = next(line for line in text.splitlines() if "✘" in line and "seed=s2" in line)
        assert f"#{ids[-1]}" in failed_line
        assert "data=d1" in text and "lr=lr1" in text and "seed=s1" in text
        train = next(n for n in tree.root.children if n.data.stage == "train")
        assert train.is_expanded and len(train.data.jobs) == 8
        d1 = next(n for n in train.children if n.data.path[-1] == "data=d1")
        assert not d1.is_expanded
        d2 = next(n for n in train.children if n.data.path[-1] == "data=d2")
        lr2 = next(n for n in d2.children if n.data.path[-1] == "lr=lr2")
        leaf = next(n for n in lr2.children if n.data.path[-1] == "seed=s2")
        assert [j.id for j in leaf.data.jobs] == [ids[-1]] and leaf.data.jobs[0].status == "failed"
        tree.move_cursor(leaf)
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, JobDetailScreen) and app.screen.job_id == ids[-1]
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("t")  # the grid: 8 points as columns
        await settle(pilot)
        grid = screen.query_one("#pipeline-grid", DataTable)
        assert grid.display and grid.row_count == 2 and len(grid.columns) == 2 + 8
        await pilot.press("t")
        await settle(pilot)
        assert tree.display and tree.cursor_node is not None and tree.cursor_node.data.path == leaf.data.path
