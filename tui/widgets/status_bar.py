"""The one line every screen shows at its top: worker, queue, GPUs, job counts."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from db.rows import WORKER_STALE_S
from tui.render import ago, gpu_summary, st


def worker_label(overview, now: float) -> Text:  # noqa: ANN001 - tui.source.Overview | None
    if overview is None:
        return Text("worker …", style="dim")
    w = overview.worker
    if w.heartbeat_at is None:
        return Text("worker ○ none", style=st("bold red"))
    if now - w.heartbeat_at >= WORKER_STALE_S:
        return Text(f"worker ○ offline ({ago(w.heartbeat_at, now)})", style=st("bold red"))
    if w.state == "stopping":
        return Text("worker ◐ stopping", style=st("yellow"))
    return Text("worker ● running", style=st("green"))


def queue_label(overview) -> Text:  # noqa: ANN001
    if overview is None:
        return Text("")
    state = overview.worker.queue_state
    if state == "running":
        return Text("queue running")
    return Text(f"queue {'⏸ paused' if state == 'paused' else '⇣ draining'}", style=st("bold yellow"))


def counts_label(overview) -> Text:  # noqa: ANN001
    if overview is None:
        return Text("")
    c = overview.counts
    out = Text()
    for status, icon, style in (("running", "▶", "cyan"), ("queued", "…", "yellow"), ("failed", "✘", "red")):
        if c.get(status):
            if out:
                out.append(" ")
            out.append(f"{icon}{c[status]}", style=st(style))
    return out


class StatusBar(Static):
    """Bound to the app's `overview` and `now`; never reads anything itself."""

    DEFAULT_CSS = """
    StatusBar { height: 1; width: 1fr; background: $panel; color: $foreground; padding: 0 1; }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "overview", self._changed)
        self.watch(self.app, "now", self._changed, init=False)

    def on_resize(self) -> None:
        self._changed()

    def _changed(self, _value: object = None) -> None:
        line = self.line()
        if line != getattr(self, "_line", None):  # the clock ticks every second; the line rarely changes
            self._line = line
            self.update(line)

    def line(self) -> Text:
        app = self.app
        ov = getattr(app, "overview", None)
        now = getattr(app, "now", 0.0)
        sep = Text(" │ ", style="dim")
        head = Text("labdeck", style="bold")
        parts = [worker_label(ov, now), queue_label(ov)]
        counts = counts_label(ov)
        out = Text.assemble(head, sep, *(Text.assemble(p, sep) for p in parts if p))
        width = max(0, self.size.width - 2)
        room = width - out.cell_len - counts.cell_len - 3
        if ov is not None and room > 8:
            out.append_text(gpu_summary(ov.gpus, room))
        if counts:
            out.append_text(sep)
            out.append_text(counts)
        out.truncate(width, overflow="ellipsis")
        return out
