"""The New-job menu's saved specs, recipes and spec files: listed after the kinds and presets, off the loop.

A mixin of `NewJobScreen`: reads the user's saved specs (`HOME/specs`, `tui.saved_specs`) and the
shipped recipes (`engine.recipes`, YAML files) in a thread worker and appends them, with their
descriptions and the recipes' variants, to the menu; choosing one (or "a spec file from disk", with
path completion) opens `tui.screens.recipe.RecipeScreen`, and a queued recipe closes the New-job
screen with the new ids as any queued job does.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from tui.saved_specs import SavedSpec


class RecipesLoaded(Message):
    def __init__(self, recipes: list[tuple[str, str, str | None, str]], saved: list[SavedSpec]) -> None:
        super().__init__()
        self.recipes = recipes
        self.saved = saved


class RecipeMenu:
    """Mixed into NewJobScreen (a Screen with the `#kind-menu` OptionList and `_recipes`)."""

    _recipes: dict[str, tuple[str, str | None, str]]
    _saved: dict[str, Path]

    @work(thread=True, exclusive=True, group="recipes", exit_on_error=False)
    def _load_recipes(self) -> None:
        from tui.recipes import recipe_menu
        from tui.saved_specs import list_specs

        self.post_message(RecipesLoaded(recipe_menu(), list_specs(self.app.source.home)))

    def on_recipes_loaded(self, message: RecipesLoaded) -> None:
        menu = self.query_one("#kind-menu", OptionList)
        self._recipes = {oid: (name, variant, text) for oid, name, variant, text in message.recipes}
        self._saved = {s.name: s.path for s in message.saved}
        highlighted = menu.highlighted
        opts: list[Option | None] = list(self._menu_options())
        if message.saved:
            opts.append(None)
            opts += [Option(Text.assemble(("spec   ", "dim"), (s.name, "bold"), "  ", (s.description, "dim")),
                            id=f"saved:{s.name}") for s in message.saved]
        opts.append(None)
        for oid, name, variant, text in message.recipes:
            label = Text.assemble(("recipe ", "dim"), (name, "bold"), (f" · {variant}" if variant else "", "cyan"),
                                  "  ", (text, "dim"))
            opts.append(Option(label, id=oid))
        menu.clear_options()
        menu.add_options(opts)
        if highlighted is not None:
            menu.highlighted = min(highlighted, menu.option_count - 1)

    async def _open_recipe(self, path, variant: str | None, title: str) -> None:  # noqa: ANN001
        """A recipe, a spec file from disk or a saved spec: its vars as a form, a preview, ctrl+s."""
        from tui.screens.recipe import RecipeScreen

        def queued(ids: list[int] | None) -> None:
            if ids:
                self.dismiss(ids)

        self.app.push_screen(RecipeScreen(path, variant, title), queued)

    def _ask_file(self) -> None:
        from tui.screens.dialogs import PromptScreen
        from tui.screens.recipe import PathSuggester

        def chosen(path: str | None) -> None:
            if path:
                self.call_later(self._open_recipe, Path(path).expanduser(), None, path)

        self.app.push_screen(PromptScreen("A spec file (YAML or JSON) or recipe to queue", "",
                                          "[b]→[/b] completes    [b]enter[/b] open    [b]escape[/b] cancel",
                                          suggester=PathSuggester()), chosen)

