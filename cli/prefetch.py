"""`labdeck prefetch SPEC|RECIPE [--var ...] [--variant V] [--list]`: fetch what the jobs will load, ahead.

Run it where there is internet (a login node sharing `HF_HOME` with the compute nodes): it expands
the spec exactly as `submit` would, lists every model and dataset the jobs name, and downloads the
hub ones into the Hugging Face cache with huggingface_hub's progress bars. Jobs on nodes without
internet then run with `HF_HUB_OFFLINE=1` and find them there. Local folders are listed, not
copied; paths an earlier pipeline stage writes are counted, not fetched. `HF_TOKEN` comes from the
environment or the home's secrets.env (gated models). Nothing is stored in the home's database.

Exit 0 when everything is here, 1 when a download failed (one line per repository, naming it),
2 for a bad spec. A local path that does not exist is a warning (it may be written later).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from cli.common import AddCommand, UserError


def _token(home) -> str | None:  # noqa: ANN001 - Path
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from engine import secrets

    try:
        return secrets.load(home).get("HF_TOKEN")
    except secrets.SecretsError as e:
        raise UserError(str(e)) from None


def cmd_prefetch(args: argparse.Namespace) -> int:
    from client import Client, ClientError, parse_vars
    from db.home import ensure_home
    from engine import hub

    try:  # expanded and validated exactly as submit does; nothing stored
        expansions = Client.expand(args.files, parse_vars(args.var or ()), args.variant)
    except ClientError as e:
        raise UserError(str(e)) from None
    specs = [d.spec for exp in expansions for d in exp.drafts]
    listing = hub.list_refs(specs)
    if args.json:
        print(json.dumps({
            "hub": [{"type": i.repo_type, "id": i.repo_id, "revision": i.revision, "jobs": i.jobs} for i in listing.hub],
            "local": [{"type": w, "path": p} for w, p in listing.local],
            "missing": [{"type": w, "path": p, "job": j} for w, p, j in listing.missing],
            "from_earlier_stages": listing.upstream,
        }, indent=2))
    else:
        for i in listing.hub:
            print(f"{i.repo_type:8} {i.label:50} hub    ({len(i.jobs)} job{'s' if len(i.jobs) != 1 else ''})")
        for w, p in listing.local:
            print(f"{w:8} {p:50} local")
        if listing.upstream:
            print(f"{listing.upstream} reference(s) to outputs of earlier stages: made by the pipeline, nothing to fetch")
    for w, p, j in listing.missing:  # submit accepts them (the file may appear later); say so, fetch the rest
        print(f"labdeck: warning: {w} {p} (job {j}): no such file or folder here, and not a hub id", file=sys.stderr)
    if args.list or not listing.hub:
        return 0
    try:
        import huggingface_hub  # noqa: F401 - the base install has no hub client
    except ImportError:
        raise UserError("prefetch: needs huggingface_hub, which this install lacks: pip install 'labdeck[hub]'") from None
    token = _token(ensure_home(args.home))
    failed = 0
    for n, item in enumerate(listing.hub, 1):
        print(f"[{n}/{len(listing.hub)}] {item.repo_type} {item.label}", file=sys.stderr, flush=True)
        try:
            folder = hub.download(item, token)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - offline, gated, unknown, network: one line each, go on with the rest
            print(f"labdeck: {hub.describe_error(item, e)}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"    -> {folder}", file=sys.stderr)
    if failed:
        print(f"labdeck: {failed} of {len(listing.hub)} could not be fetched", file=sys.stderr)
    return 1 if failed else 0


def register(add: AddCommand) -> None:
    sp = add("prefetch", cmd_prefetch, "Download every hub model and dataset a spec or recipe names into the "
             "Hugging Face cache, for nodes without internet (HF_HUB_OFFLINE=1)")
    sp.add_argument("files", nargs="+", metavar="SPEC", help="spec files or shipped recipe names, as for submit")
    sp.add_argument("--var", action="append", metavar="NAME=VALUE", help="override a variable the file declares under vars:")
    sp.add_argument("--variant", metavar="NAME", help="a pipeline's variant, as for submit")
    sp.add_argument("--list", action="store_true", help="only list what the jobs name; download nothing")
    sp.add_argument("--json", action="store_true", help="print the listing as JSON")
