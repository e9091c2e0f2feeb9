"""`labdeck wait JOB... | -e EXP [--timeout S]`: block until jobs end, for scripts and CI.

Exit status: 0 when every job succeeded, 1 when any ended otherwise (failed, cancelled,
interrupted, skipped), 124 when `--timeout` passed first (as timeout(1) does). A job that was
retried is followed to its newest attempt, so an automatic retry that succeeds counts as success.
On a terminal a progress line on standard error is rewritten in place; in a pipe nothing is printed
until the end, when one line per job that did not succeed says why.

It polls the database read-only (no SQLAlchemy, no home created) every half second; a poll is a
few milliseconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from cli.common import AddCommand, UserError, job_ids, reader
from cli.text import is_terminal, safe

EXIT_TIMEOUT = 124
POLL_S = 0.5


def _targets(con, args: argparse.Namespace) -> list[int]:  # noqa: ANN001 - sqlite3.Connection
    from db.reads import experiment_names, job_ids_exist, list_jobs

    if args.experiment:
        if args.jobs:
            raise UserError("wait: name jobs or an experiment (-e), not both")
        if args.experiment not in experiment_names(con):
            raise UserError(f"experiment {args.experiment!r}: no such experiment")
        ids = [r.id for r in list_jobs(con, experiment=args.experiment, newest_first=False)]
        if not ids:
            raise UserError(f"experiment {args.experiment!r}: no jobs in it")
        return ids
    if not args.jobs:
        raise UserError("wait: name jobs, or an experiment with -e")
    ids = job_ids(args.jobs)
    missing = job_ids_exist(con, ids)
    if missing:
        raise UserError(f"job {missing[0]}: no such job")
    return ids


def cmd_wait(args: argparse.Namespace) -> int:
    from db.reads import latest_attempts
    from db.schema import LIVE_STATUSES

    if args.timeout is not None and args.timeout < 0:
        raise UserError(f"--timeout {args.timeout}: must be 0 or more seconds")
    with reader(args) as con:
        ids = _targets(con, args)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    tty = is_terminal(sys.stderr)
    while True:
        with reader(args) as con:
            latest = latest_attempts(con, ids)  # {asked id: (newest attempt id, status, name)}
        live = [i for i, (_, st, _) in latest.items() if st in LIVE_STATUSES]
        if tty:
            counts: dict[str, int] = {}
            for _, st, _ in latest.values():
                counts[st] = counts.get(st, 0) + 1
            line = f"waiting for {len(ids)} job(s): " + ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
        if not live:
            break
        if deadline is not None and time.monotonic() >= deadline:
            if tty:
                sys.stderr.write("\n")
            print(f"labdeck: wait: {len(live)} job(s) still queued or running after {args.timeout:g} s", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic())))
    if tty:
        sys.stderr.write("\n")
    bad = {i: v for i, v in latest.items() if v[1] != "succeeded"}
    for i, (newest, st, name) in bad.items():
        attempt = f" (newest attempt {newest})" if newest != i else ""
        print(f"job {i}{attempt} {safe(name, keep_lines=False)}: {st}", file=sys.stderr)
    return 1 if bad else 0


def register(add: AddCommand) -> None:
    sp = add("wait", cmd_wait, "Wait until jobs (or every job of an experiment) have ended; "
             "exit 0 if all succeeded, 1 if any did not, 124 on --timeout")
    sp.add_argument("jobs", nargs="*", metavar="JOB")
    sp.add_argument("-e", "--experiment", help="every job of this experiment")
    sp.add_argument("--timeout", type=float, default=None, metavar="S", help="give up after S seconds (exit 124)")
