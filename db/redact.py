"""Secrets out of what labdeck shows: environment values whose names look secret.

A command job's `env` is where API keys and tokens go. The job gets them (the stored spec keeps
them), but every read model built for people and files (`show`, `show --json`, `export`, the
app's detail and results) passes the spec through `redact`, which replaces the value of any
`env` entry whose name contains KEY, TOKEN, SECRET, PASSWORD (or PASSWD, CREDENTIAL, AUTH) with
`REDACTED`. Only `env` mappings are touched: a field such as `api_key_env` holds the *name* of a
variable, not its value.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)


def secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def redact(spec: Any) -> Any:
    """A copy of `spec` with secret-looking `env` values replaced (any depth: pipeline stages too)."""
    if isinstance(spec, dict):
        out = {}
        for k, v in spec.items():
            if k == "env" and isinstance(v, dict):
                out[k] = {n: (REDACTED if secret_name(str(n)) else val) for n, val in v.items()}
            else:
                out[k] = redact(v)
        return out
    if isinstance(spec, list):
        return [redact(v) for v in spec]
    return spec


def redact_json(text: str) -> str:
    """`redact` for a spec stored as JSON text (export rows); text that is not JSON is returned as is."""
    import json

    try:
        return json.dumps(redact(json.loads(text)), sort_keys=True)
    except ValueError:
        return text
