"""The bottom line: the keys that matter here, as one line of text.

Textual's Footer is a widget per key, recomposed whenever focus moves; on the jobs screen that
was the largest single cost of the first frame. This is one widget that re-renders a line from
the screen's active bindings (those with `show=True`) when they change. `?` lists every key.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget


class KeyBar(Widget):
    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; width: 1fr; background: $panel; color: $foreground; }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _changed(self, _screen: object = None) -> None:
        self.refresh()

    def render(self) -> Text:
        app = self.app
        out = Text(no_wrap=True, overflow="ellipsis")
        seen: set[str] = set()
        # A key that a Textual widget binds without showing it (the table's enter) still shows
        # the screen's own binding for it (enter: Open).
        own = {k.strip(): b for node in (self.screen, app) for b in type(node).BINDINGS
               if isinstance(b, Binding) and b.show for k in b.key.split(",")}
        for key, active in self.screen.active_bindings.items():
            b = active.binding
            if not b.show and key in own:
                b = own[key]
            if not b.show or b.action in seen or b.system:
                continue
            seen.add(b.action)
            out.append(f" {app.get_key_display(b)} ", style="bold" if active.enabled else "dim")
            out.append(f"{b.description} ", style="" if active.enabled else "dim")
        palette = Text(" ^p palette ", style="dim")
        width = self.size.width
        if width and out.cell_len + palette.cell_len <= width:
            out.append(" " * (width - out.cell_len - palette.cell_len))
            out.append_text(palette)
        out.truncate(width or 80, overflow="ellipsis")
        return out
