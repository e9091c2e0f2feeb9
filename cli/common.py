"""What every `labdeck` subcommand shares: the one-line user error, the store opener, id parsing.

Nothing here imports the store at module level: `labdeck --help` must stay fast, so each
command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

EXIT_USAGE = 2
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted", "skipped")
KINDS = ("command", "generate", "score", "finetune", "merge")  # engine.specs.KINDS, without importing it

# How a subject module adds its commands: add(name, handler, help) -> the subcommand's parser.
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def open_home_store(args: argparse.Namespace):  # noqa: ANN201 - db.session.Store, imported lazily
    from db.session import open_store

    return open_store(args.home)


def job_ids(values: Sequence[str]) -> list[int]:
    ids = []
    for v in values:
        try:
            ids.append(int(v))
        except ValueError:
            raise UserError(f"job id {v!r}: not a number") from None
    return ids


def require_jobs(session, ids: Sequence[int]) -> None:  # noqa: ANN001
    from db.queries import job_ids_exist

    missing = job_ids_exist(session, ids)
    if missing:
        raise UserError(f"job {missing[0]}: no such job")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
