"""An experiment's pipeline as a tree: stage → one level per matrix axis → job.

The grid (stages × matrix points) reads well while the points fit across the screen. A deep
matrix does not: three axes of four values are 64 columns, each a few cells wide, and the header
is three lines of cut names. The tree keeps the same facts in rows, the way Airflow's grid view
folds task groups: each stage with its state counts and what it waits on, under it one level per
axis (`teacher=qwen-7b`, then `student=...`), the jobs at the leaves with their glyph and progress.
A stage over fewer axes stops branching where its own axes end.

Each node carries a `PipelineNode` as data, so the screen's keys (open, retry the stage) work on
whatever line the cursor is on. Rebuilding keeps the nodes the user had open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui.render import STATUS_ICON, STATUS_STYLE, st
from tui.widgets.pipeline_grid import cell_text, stage_label

DEEP_AXES = 3  # from this many matrix axes on, the pipeline opens as a tree
WIDE_POINTS = 40  # or from this many matrix points (columns) on


@dataclass(frozen=True)
class PipelineNode:
    """What a tree line stands for: a stage, a group of its jobs at some axis values, or one job."""

    stage: str | None
    path: tuple[str, ...]  # the labels from the stage down to this node: a stable key across reloads
    jobs: tuple[Any, ...]  # db.experiments.StageJob under this node


def prefers_tree(p: Any) -> bool:  # db.experiments.Pipeline
    """Whether the pipeline reads better as a tree than as a grid."""
    return len(p.axes) >= DEEP_AXES or len(p.points) >= WIDE_POINTS


def _job_label(j: Any) -> Text:
    out = Text(STATUS_ICON.get(j.status, "?"), style=st(STATUS_STYLE.get(j.status, "")))
    out.append(f" {j.name}")
    out.append(f"  #{j.id}", style=st("dim"))
    if j.status == "running" and j.fraction is not None:
        out.append(f"  {j.fraction * 100:.0f}%", style=st("cyan"))
    return out


def _group_label(text: str, jobs: list[Any], style: str = "") -> Text:
    out = Text(text, style=st(style))
    out.append("  ")
    counts = cell_text(jobs)
    counts.justify = None
    out.append_text(counts)
    return out


def _needs_attention(jobs: list[Any]) -> bool:
    return any(j.status in ("failed", "interrupted", "running") for j in jobs)


def _branch(node: TreeNode, stage: str | None, path: tuple[str, ...], jobs: list[Any], axes: list[str],
            expanded: set[tuple[str, ...]], first: bool) -> None:
    """Group `jobs` by the first of `axes` they carry; a job whose axes are used up becomes a leaf."""
    for i, axis in enumerate(axes):
        if any(axis in j.point for j in jobs):
            rest = axes[i + 1:]
            break
    else:
        for j in jobs:
            node.add_leaf(_job_label(j), data=PipelineNode(stage, (*path, f"#{j.id}"), (j,)))
        return
    values: dict[str, list[Any]] = {}
    leaves = []
    for j in jobs:
        if axis in j.point:
            values.setdefault(j.point[axis], []).append(j)
        else:
            leaves.append(j)
    for j in leaves:
        node.add_leaf(_job_label(j), data=PipelineNode(stage, (*path, f"#{j.id}"), (j,)))
    for value in sorted(values):
        group = values[value]
        key = (*path, f"{axis}={value}")
        if len(group) == 1 and not any(a in group[0].point for a in rest):
            j = group[0]
            label = Text(f"{axis}={value}  ", style=st("dim"))
            label.append_text(_job_label(j))
            node.add_leaf(label, data=PipelineNode(stage, key, (j,)))
            continue
        child = node.add(_group_label(f"{axis}={value}", group), data=PipelineNode(stage, key, tuple(group)),
                         expand=key in expanded or (first and _needs_attention(group)))
        _branch(child, stage, key, group, rest, expanded, first)


def fill(tree: Tree, p: Any) -> None:  # db.experiments.Pipeline
    """(Re)build `tree` from the pipeline `p`, keeping open what was open and the cursor's line.

    The first time, the branches down to failed, interrupted and running jobs open by themselves:
    they are what a person opens the pipeline to look at."""
    expanded = {n.data.path for n in _walk(tree.root) if n.is_expanded and isinstance(n.data, PipelineNode)}
    first = not expanded and not tree.root.children
    at = tree.cursor_node.data.path if tree.cursor_node is not None and isinstance(tree.cursor_node.data,
                                                                                    PipelineNode) else None
    tree.clear()
    tree.show_root = False
    for stage in p.stages:
        jobs = list(p.jobs.get(stage, []))
        label = _group_label(stage_label(stage), jobs, "bold")
        needs = p.needs.get(stage, [])
        if needs:
            label.append("  waits on " + ", ".join(stage_label(n) for n in needs), style=st("dim"))
        key = (stage_label(stage),)
        node = tree.root.add(label, data=PipelineNode(stage, key, tuple(jobs)),
                             expand=key in expanded or (first and _needs_attention(jobs)))
        _branch(node, stage, key, jobs, list(p.axes), expanded, first)
    tree.root.expand()
    if at is not None:
        for n in _walk(tree.root):
            if isinstance(n.data, PipelineNode) and n.data.path == at:
                tree.call_after_refresh(tree.move_cursor, n)
                break


def _walk(node: TreeNode) -> list[TreeNode]:
    out = []
    for child in node.children:
        out.append(child)
        out.extend(_walk(child))
    return out
