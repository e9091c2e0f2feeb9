"""The `labdeck` command: the parser, built from the subject modules, and the top-level error policy.

`labdeck` alone opens the terminal app; subcommands queue, inspect and export work from scripts.
Only argparse is imported at start-up, every handler imports what it needs, so `labdeck --help`
answers in a fraction of a second and nothing here ever loads torch.

Errors a person can fix (a bad spec file, an unknown job id) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from cli import complete, demo, experiments, jobs, mirror, plot, prefetch, prune, results, wait, worker
from cli import secrets as secrets_cmd
from cli.common import EXIT_USAGE, UserError


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import run_app

    return run_app(home=args.home)


def version() -> str:
    """The installed distribution's version (pyproject.toml's), without importing anything heavy."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("labdeck")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


class _Version(argparse.Action):
    """`--version`, looked up only when asked for (importlib.metadata is not free at start-up)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"labdeck {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = complete.CompletingParser(
        prog="labdeck",
        description="Queue, watch and review LLM fine-tuning and evaluation jobs on this box's GPUs. "
        "With no command, opens the terminal app.",
    )
    p.add_argument("--home", default=None, help="labdeck's folder (default $LABDECK_HOME or ~/.local/share/labdeck)")
    p.add_argument("--version", action=_Version, nargs=0, help="print labdeck's version and exit")
    p.set_defaults(func=cmd_tui)
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    # `--home` works before or after the command; SUPPRESS keeps a value given before it.
    common = type(p)(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="labdeck's folder (as above)")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common])
        sp.set_defaults(func=func)
        return sp

    jobs.register(add)
    wait.register(add)
    results.register(add)
    experiments.register(add)
    prune.register(add)
    plot.register(add)
    mirror.register(add)
    worker.register(add)
    demo.register(add)
    secrets_cmd.register(add)
    prefetch.register(add)
    complete.register(add)
    add("tui", cmd_tui, "Open the terminal app (the same as no command)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    complete.autocomplete(parser)  # returns at once unless the shell is asking for completions
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"labdeck: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback, for known store errors
        line = known_store_error(e)
        if line is None:
            raise
        print(f"labdeck: {line}", file=sys.stderr)
        return EXIT_USAGE


def known_store_error(e: BaseException) -> str | None:
    """One line for the store errors a person can act on, else None (a bug: let it show its traceback)."""
    from db.home import HomeError
    from db.migrations import SchemaBusy, SchemaTooNew

    if isinstance(e, (SchemaTooNew, SchemaBusy, HomeError)):
        return str(e)
    if isinstance(e, OverflowError):  # a number SQLite cannot hold (ids and values are 64-bit)
        return f"a number is too large for the store (at most {2**63 - 1}): {e}"
    text = str(getattr(e, "orig", None) or e)
    if "database is locked" in text or "database table is locked" in text:  # sqlite3 or SQLAlchemy's wrapper
        return ("the database is locked: another labdeck process kept it busy past the 10 s timeout; "
                "try again (labdeck worker status shows whether the worker is stuck)")
    return None


def entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())
