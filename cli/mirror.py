"""`labdeck mirror`: turn the per-home mirror of job metrics to Weights & Biases on or off.

The setting is a file, `mirror.json` in the home, read by each job's launcher when the job starts
(see `engine/integrations/mirror.py` for where the mirror runs and why). Nothing here imports wandb.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.common import AddCommand, UserError


def cmd_mirror(args: argparse.Namespace) -> int:
    from cli.common import home_path
    from db.home import ensure_home
    from engine.integrations.mirror import read_config, write_config

    home = home_path(args)
    if args.action == "on":
        ensure_home(home)
        wanted: dict[str, Any] = {"tracker": "wandb", "project": args.project, "mode": args.mode}
        if args.entity:
            wanted["entity"] = args.entity
        write_config(home, wanted)
        print(f"jobs started from now on mirror their metrics to W&B ({args.mode}), project {args.project}")
        return 0
    if args.action == "off":
        if home.is_dir():
            write_config(home, None)
        print("mirror off")
        return 0
    try:
        cfg = read_config(home)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(json.dumps(cfg) if cfg else "mirror off")
    return 0


def register(add: AddCommand) -> None:
    sp = add("mirror", cmd_mirror, "Mirror every job's metrics to Weights & Biases (off by default; offline mode respected)")
    sp.add_argument("action", nargs="?", default="status", choices=("on", "off", "status"))
    sp.add_argument("--project", default="labdeck", help="W&B project (default labdeck)")
    sp.add_argument("--entity", default=None, help="W&B entity (team or user)")
    sp.add_argument("--mode", default="offline", choices=("offline", "online"),
                    help="offline (default) writes runs into each job's run folder for `wandb sync`")
