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

from cli import demo, jobs, results, worker
from cli.common import EXIT_USAGE, UserError


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import run_app

    return run_app(home=args.home)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labdeck",
        description="Queue, watch and review LLM fine-tuning and evaluation jobs on this box's GPUs. "
        "With no command, opens the terminal app.",
    )
    p.add_argument("--home", default=None, help="labdeck's folder (default $LABDECK_HOME or ~/.local/share/labdeck)")
    p.set_defaults(func=cmd_tui)
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    # `--home` works before or after the command; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", default=argparse.SUPPRESS, help="labdeck's folder (as above)")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common])
        sp.set_defaults(func=func)
        return sp

    jobs.register(add)
    results.register(add)
    worker.register(add)
    demo.register(add)
    add("tui", cmd_tui, "Open the terminal app (the same as no command)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
        from db.migrations import SchemaTooNew

        if isinstance(e, SchemaTooNew):
            print(f"labdeck: {e}", file=sys.stderr)
            return EXIT_USAGE
        raise


def entry() -> None:  # pragma: no cover - the console script
    sys.exit(main())
