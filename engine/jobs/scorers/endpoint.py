"""One OpenAI-compatible HTTP call (`/chat/completions`), shared by the judge and correctness scorers.

Transient failures (429, 5xx, connection errors) are retried with exponential backoff; a client
error (400/401/403/404) is the user's input and becomes a one-line JobInputError.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from engine.jobs._common import JobInputError


def post_json(url: str, body: dict[str, Any], api_key: str | None, timeout: float, retries: int) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    payload = json.dumps(body).encode("utf-8")
    delay = 1.0
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=payload, headers=headers, method="POST")  # noqa: S310 - URL checked in spec
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            if e.code in (429, 500, 502, 503, 504) and attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            detail = e.read().decode("utf-8", "replace")[:200] if e.fp else ""
            if e.code in (400, 401, 403, 404):
                raise JobInputError(f"judge endpoint {url}: HTTP {e.code} {detail}".strip()) from e
            raise
        except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
            if attempt < retries:
                time.sleep(delay)
                delay *= 2
                continue
            raise RuntimeError(f"judge endpoint {url}: {e}") from e
    raise AssertionError("unreachable")


def chat_completion(endpoint: str, body: dict[str, Any], api_key: str | None, timeout: float,
                    retries: int) -> dict[str, Any]:
    """POST `body` to `{endpoint}/chat/completions` and return the decoded JSON reply."""
    return post_json(endpoint.rstrip("/") + "/chat/completions", body, api_key, timeout, retries)
