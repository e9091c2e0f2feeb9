"""The command palette (ctrl+p): every action a key can do on the current screen, and a few more.

Commands are generated from the active bindings of the screen the palette was opened on (its
widgets', the screen's and the app's), so a new binding shows up here without a second list to
keep in step. Dynamic commands add what has no single key: filter or review one experiment,
filter by a status or kind, sort by a column, open a job by number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

SKIP_ACTIONS = {"cursor_down", "cursor_up", "command_palette", "focus_next", "focus_previous"}


class LabdeckCommands(Provider):
    def _commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        app = self.app
        screen = self.screen
        seen: set[tuple[int, str]] = set()
        # labdeck's own keys on the focused widget, its screen and the app (also those a focused
        # widget shadows, like the table's enter over the screen's "Open"); not Textual's plumbing.
        nodes = [n for n in (screen.focused.ancestors_with_self if screen.focused else [screen])
                 if type(n).__module__.startswith("tui.")]
        for node in [*nodes, app]:
            for b in type(node).BINDINGS:
                if not isinstance(b, Binding) or not b.description or b.action in SKIP_ACTIONS:
                    continue
                ident = (id(node), b.action)
                if ident in seen:
                    continue
                seen.add(ident)
                help_text = f"key {app.get_key_display(b)}" + (f" · {b.tooltip}" if b.tooltip else "")
                yield b.description, help_text, partial(app.run_action, b.action, node)
        from tui.screens.jobs import SORTS, JobsScreen

        ov = getattr(app, "overview", None)
        experiments = list(ov.experiments) if ov is not None else []
        jobs = app.jobs_screen() if hasattr(app, "jobs_screen") else None
        for exp in experiments[:200]:
            yield f"Results: {exp}", "pivot table, heatmap and bars of this experiment", partial(app.run_action, f"show_results({exp!r})")
            if isinstance(jobs, JobsScreen):
                yield f"Jobs of experiment: {exp}", "filter the jobs table", partial(self._filter, f"exp:{exp}")
        if isinstance(jobs, JobsScreen):
            for status in ("running", "queued", "failed", "succeeded", "cancelled", "interrupted", "skipped"):
                yield f"Jobs with status: {status}", "filter the jobs table", partial(self._filter, f"status:{status}")
            for kind in ("command", "generate", "score", "finetune", "merge"):
                yield f"Jobs of kind: {kind}", "filter the jobs table", partial(self._filter, f"kind:{kind}")
            for sort in SORTS:
                yield f"Sort jobs by: {sort}", "order of the jobs table", partial(self._sort, sort)
            yield "Jobs: clear filter", "show every job", partial(self._filter, "")

    async def _filter(self, text: str) -> None:
        await self.app.switch_mode("jobs")
        self.app.jobs_screen().set_filter(text)

    async def _sort(self, sort: str) -> None:
        await self.app.switch_mode("jobs")
        self.app.jobs_screen().set_sort(sort)

    async def discover(self) -> Hits:
        for name, help_text, command in self._commands():
            yield DiscoveryHit(name, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        q = query.strip().lstrip("#")
        if q.isdigit():
            yield Hit(1.0, f"Open job {q}", partial(self.app.open_job, int(q)), help="job detail")
        for name, help_text, command in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, help=help_text)
