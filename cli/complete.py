"""Shell completion (argcomplete): commands and options, job ids, experiments and recipe names.

`labdeck completion bash` (or `zsh`) prints the hook to put in the shell's startup file:

    eval "$(labdeck completion bash)"

argcomplete is imported only while completing (the shell sets `_ARGCOMPLETE`), so `labdeck --help`
and every ordinary command pay nothing for it. The completers read the home read-only and never
create one; any error completes nothing rather than printing into the prompt.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cli.common import AddCommand


def _home(parsed: argparse.Namespace) -> Path:
    from cli.common import home_path

    return home_path(parsed)


def _safe(fn: Callable[[argparse.Namespace], Iterable[str]]) -> Callable[..., list[str]]:
    def complete(prefix: str = "", parsed_args: argparse.Namespace | None = None, **_: Any) -> list[str]:
        try:
            return [v for v in fn(parsed_args or argparse.Namespace(home=None)) if v.startswith(prefix)]
        except Exception:  # noqa: BLE001 - a completer never breaks the prompt
            return []

    return complete


def _jobs(parsed: argparse.Namespace) -> list[str]:
    from db import reads

    con = reads.open_readonly(_home(parsed))
    try:
        return [str(r.id) for r in reads.list_jobs(con, limit=200)]
    finally:
        con.close()


def _experiments(parsed: argparse.Namespace) -> list[str]:
    from db import reads

    con = reads.open_readonly(_home(parsed))
    try:
        return reads.experiment_names(con)
    finally:
        con.close()


def _recipes(_parsed: argparse.Namespace) -> list[str]:
    from engine.recipes import RECIPES_DIR

    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


complete_jobs = _safe(_jobs)
complete_experiments = _safe(_experiments)
complete_recipes = _safe(_recipes)


def attach(action: argparse.Action) -> argparse.Action:
    """Give a JOB, experiment or spec-file argument its completer (argcomplete reads `.completer`)."""
    if action.metavar == "JOB":
        action.completer = complete_jobs  # type: ignore[attr-defined]
    elif action.dest == "experiment" or action.metavar == "EXPERIMENT":
        action.completer = complete_experiments  # type: ignore[attr-defined]
    elif action.dest == "files":
        action.completer = _recipes_and_files  # type: ignore[attr-defined]
    return action


class CompletingParser(argparse.ArgumentParser):
    """An ArgumentParser whose arguments carry their completers from the moment they are added."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        return attach(super().add_argument(*args, **kwargs))


def _recipes_and_files(prefix: str = "", parsed_args: argparse.Namespace | None = None, **kw: Any) -> list[str]:
    from argcomplete.completers import FilesCompleter

    return complete_recipes(prefix, parsed_args) + list(FilesCompleter(("yaml", "yml", "json"))(prefix, **kw))


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit, when there is one; otherwise return at once."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["labdeck"], shell=args.shell))
    return 0


def register(add: AddCommand) -> None:
    sp = add("completion", cmd_completion, "Print the shell hook for tab completion: eval \"$(labdeck completion bash)\"")
    sp.add_argument("shell", choices=("bash", "zsh"))
