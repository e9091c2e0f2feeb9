"""What every `labdeck` subcommand shares: the one-line user error, the store openers, id parsing.

Nothing here imports the store at module level: `labdeck --help` must stay fast, so each
command imports what it needs when it runs. Inspection commands read through `reader()`: plain
sqlite3, read-only, no SQLAlchemy import, and no home created where none is.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from db.schema import STATUS_WORDS as STATUSES  # noqa: F401 - stdlib only, cheap to import

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

EXIT_USAGE = 2
KINDS = ("command", "generate", "score", "finetune", "merge")  # engine.specs.KINDS, without importing it
MAX_ID = 2**63 - 1  # SQLite's INTEGER

# How a subject module adds its commands: add(name, handler, help) -> the subcommand's parser.
AddCommand = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit status 2."""


def open_home_store(args: argparse.Namespace):  # noqa: ANN201 - db.session.Store, imported lazily
    from db.session import open_store

    return open_store(args.home)


def home_path(args: argparse.Namespace) -> Path:
    """The home the command names (`--home`, else `$LABDECK_HOME`, else the default), absolute; nothing created."""
    from db.home import default_home

    return (Path(args.home).expanduser() if getattr(args, "home", None) else default_home()).absolute()


@contextmanager
def reader(args: argparse.Namespace) -> Iterator[sqlite3.Connection]:
    """A read-only sqlite3 connection on the home's database, for `db.reads`; closed after the block.

    A folder without a labdeck database is a one-line error (a typo in `--home` must not create a
    home). A database older than this release is migrated once through the store, then read.
    """
    from db import reads

    home = home_path(args)
    try:
        con = reads.open_readonly(home)
    except reads.NoHome as e:
        raise UserError(str(e)) from None
    except reads.StoreNeedsMigration:
        open_home_store(args).dispose()
        con = reads.open_readonly(home)
    try:
        yield con
    finally:
        con.close()


def job_id(value: str | int) -> int:
    """A job id from the command line: a positive integer SQLite can hold, else a one-line error."""
    try:
        i = int(value)
    except ValueError:
        raise UserError(f"job id {value!r}: not a number") from None
    if not 0 < i <= MAX_ID:
        raise UserError(f"job id {value}: out of range (1 to {MAX_ID})")
    return i


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse `type` for an integer in [lo, hi]: a one-line usage error outside it, never an overflow."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range ({lo} to {hi})")
        return n

    parse.__name__ = "integer"
    return parse


def job_ids(values: Sequence[str]) -> list[int]:
    return [job_id(v) for v in values]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
