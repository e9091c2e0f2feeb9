"""`labdeck secrets set KEY | ls | rm KEY`: the API keys jobs get, kept in `$LABDECK_HOME/secrets.env`.

The value is read from stdin (a pipe: `pass show openai | labdeck secrets set OPENAI_API_KEY`) or
asked for without echo on a terminal, never taken from the command line, where `ps` and the shell
history would show it. `ls` prints names only. The worker reads the file for each job it starts
(`engine.secrets`), so a key set now reaches the next job without restarting the worker.
"""

from __future__ import annotations

import argparse
import sys

from cli.common import AddCommand, UserError


def _read_value(key: str) -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"{key}: ")
    data = sys.stdin.read()
    # A trailing newline from `echo` or a file is not part of the value; an inner one is refused below.
    return data[:-1] if data.endswith("\n") else data


def cmd_secrets(args: argparse.Namespace) -> int:
    from db.home import ensure_home
    from engine import secrets

    home = ensure_home(args.home)
    try:
        if args.action == "ls":
            if args.key:
                raise UserError("secrets ls: takes no KEY")
            for name in secrets.names(home):
                print(name)
            return 0
        if not args.key:
            raise UserError(f"secrets {args.action}: give the secret's NAME, e.g. OPENAI_API_KEY")
        secrets.check_key(args.key)
        if args.action == "set":
            replaced = secrets.set_secret(home, args.key, _read_value(args.key))
            print(f"{args.key} {'replaced' if replaced else 'set'} in {secrets.secrets_path(home)}; "
                  "jobs started from now on get it", file=sys.stderr)
            return 0
        if not secrets.unset_secret(home, args.key):
            raise UserError(f"{args.key}: no such secret")
        print(f"{args.key} removed", file=sys.stderr)
        return 0
    except secrets.SecretsError as e:
        raise UserError(str(e)) from None


def register(add: AddCommand) -> None:
    sp = add("secrets", cmd_secrets, "Set, list or remove the API keys every job gets (HF_TOKEN, OPENAI_API_KEY, ...)")
    sp.add_argument("action", choices=("set", "ls", "rm"), help="set KEY (value from stdin or a prompt), ls (names only), rm KEY")
    sp.add_argument("key", nargs="?", default=None, metavar="KEY", help="the environment variable's name")
