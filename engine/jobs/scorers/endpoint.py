"""OpenAI-compatible HTTP calls (`/chat/completions`), shared by the judge and correctness scorers.

Requests go through `engine.jobs.api_client.ApiClient`: up to `max_concurrency` in flight, answers
in the order asked (so the scores equal those of one request at a time), 429/5xx retried with
backoff and jitter or the server's `Retry-After`, an optional per-minute request/token budget, and
every answer appended to `outputs/api_answers.jsonl` as it arrives, so a killed job asks again only
what it had not received. A client error (400/401/403/404/422) is the user's input and becomes a
one-line JobInputError.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.jobs._common import JobInputError
from engine.jobs.api_client import ApiClient, ApiConfig, EndpointRejected

ANSWERS_FILE = "api_answers.jsonl"
REQUESTS_PER_WORKER = 8  # a scoring batch holds this many requests per concurrent slot


def make_client(spec: Any, api_key: str | None, outputs: Path | None) -> ApiClient:
    """The client for a scorer spec with `endpoint`, caching answers in the job's outputs folder."""
    cfg = ApiConfig(max_concurrency=spec.max_concurrency, max_retries=spec.max_retries, timeout_s=spec.timeout_s,
                    requests_per_minute=spec.requests_per_minute, tokens_per_minute=spec.tokens_per_minute,
                    api_key=api_key)
    return ApiClient(spec.endpoint.rstrip("/") + "/chat/completions", cfg,
                     cache=Path(outputs) / ANSWERS_FILE if outputs is not None else None)


def chat_completions(client: ApiClient, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every body's decoded reply, in order."""
    try:
        return client.map(bodies)
    except EndpointRejected as e:
        raise JobInputError(str(e)) from None


def endpoint_batches(idxs: list[int], max_concurrency: int) -> list[list[int]]:
    """Batches big enough to keep every concurrent slot busy (the answer cache makes a lost batch cheap)."""
    size = max(1, max_concurrency) * REQUESTS_PER_WORKER
    return [idxs[k:k + size] for k in range(0, len(idxs), size)]
