"""Per-GPU memory and utilisation bars, and who holds what (our jobs or someone else's processes)."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.text import Text

from tui.render import bar, gib, st


def gpu_lines(gpu, job_names: dict[int, str], width: int, highlight_job: int | None = None) -> list[Text]:  # noqa: ANN001
    """Lines for one `db.queries.GpuInfo`: a title, a memory bar, a utilisation bar, its processes."""
    w = max(10, width - 24)
    mem_frac = gpu.mem_used_mb / gpu.mem_total_mb if gpu.mem_total_mb else None
    mem_style = "red" if (mem_frac or 0) > 0.9 else ("yellow" if (mem_frac or 0) > 0.6 else "green")
    util = gpu.util_pct
    lines = [Text.assemble((f"GPU {gpu.index}", "bold"), "  ", (gpu.name or "", "dim"))]
    lines.append(Text.assemble(
        "  mem  ", bar(mem_frac, w, style=mem_style), f" {gib(gpu.mem_used_mb):>5}/{gib(gpu.mem_total_mb)} GiB"
    ))
    lines.append(Text.assemble(
        "  util ", bar(None if util is None else util / 100, w, style="cyan"),
        f" {'?' if util is None else f'{util:3.0f}'} %",
    ))
    if not gpu.processes:
        lines.append(Text("  no processes", style="dim"))
    for p in sorted(gpu.processes, key=lambda p: -p.mem_mb):
        if p.job_id is not None:
            who = Text(f"job {p.job_id} {job_names.get(p.job_id, '')}".rstrip(),
                       style=st("bold cyan" if p.job_id == highlight_job else "cyan"))
        else:
            who = Text(f"foreign {p.name or 'process'}".rstrip(), style=st("magenta"))
        line = Text.assemble("  pid ", (f"{p.pid:<8}", ""), who)
        line.truncate(max(10, width - 12))
        line.append(f"  {gib(p.mem_mb)} GiB", style="dim")
        lines.append(line)
    return lines


def gpus_renderable(gpus: Iterable, job_names: dict[int, str], width: int, highlight_job: int | None = None) -> RenderableType:  # noqa: ANN001
    blocks: list[Text] = []
    for g in gpus:
        if blocks:
            blocks.append(Text(""))
        blocks += gpu_lines(g, job_names, width, highlight_job)
    return Group(*blocks) if blocks else Text("No GPU data yet: the worker publishes it with every heartbeat.", style="dim")
