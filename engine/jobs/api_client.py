"""Many chat-completion requests to an OpenAI-compatible endpoint at once, politely and resumably.

A judge or correctness recipe asks an API tens of thousands of questions. One at a time, at a few
hundred milliseconds each, that is days; the endpoint would answer many in parallel. `ApiClient.map`
sends up to `max_concurrency` requests at a time and returns the answers in the order asked, so the
result is the same list the sequential loop builds (same bodies, same seed, same answers).

Being polite to a rate-limited API:
* 429 and 5xx answers and dropped connections are retried with exponential backoff and full jitter;
  a `Retry-After` header (seconds or an HTTP-date) is honoured instead of the computed delay.
* an optional per-minute budget of requests and of tokens (estimated from the body before sending,
  corrected with the reply's `usage`) holds requests back before the API has to refuse them.

Resumable: with a cache file (in the job's run folder), every answer is appended as soon as it
arrives, keyed by a hash of the URL and the request body. A killed job started again reads the file
and asks only what is missing.

Why the standard library (threads + `http.client`) rather than the `openai` client or httpx: the
job processes then need no new dependency; both libraries would still leave us writing the parts
that matter here (a shared per-minute budget across concurrent requests, the resume cache, an
HTTP-date `Retry-After`, the error policy for bad input); the judge reads raw `logprobs` JSON that
any client hands back as a dict anyway; and at 8-64 requests in flight, each waiting hundreds of
milliseconds on the network, threads cost nothing measurable. Each thread keeps its own
keep-alive connection, so HTTPS is not a new handshake per request.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
BAD_INPUT_STATUSES = frozenset({400, 401, 403, 404, 422})
DEFAULT_CONCURRENCY = 8


class EndpointRejected(Exception):
    """The endpoint refused the request itself (bad key, unknown model, malformed body): retrying cannot help."""


@dataclass(frozen=True)
class ApiConfig:
    max_concurrency: int = DEFAULT_CONCURRENCY
    max_retries: int = 4
    timeout_s: float = 60.0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    backoff_s: float = 1.0  # first retry waits up to this long (full jitter), doubling each time
    backoff_max_s: float = 60.0
    api_key: str | None = None


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def estimate_tokens(body: dict[str, Any]) -> int:
    """A cheap upper-ish estimate of a request's tokens: about 4 characters per token, plus the reply's max."""
    chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []) if isinstance(m, dict))
    return chars // 4 + 8 + int(body.get("max_tokens") or 16)


class MinuteBudget:
    """At most `requests` requests and `tokens` tokens in any 60-second window; `acquire` blocks until there is room."""

    def __init__(self, requests: int | None, tokens: int | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.requests, self.tokens = requests, tokens
        self.clock, self.sleep = clock, sleep
        self._spent: deque[list[float]] = deque()  # [time, tokens]
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return bool(self.requests or self.tokens)

    def acquire(self, tokens: int) -> list[float] | None:
        if not self.limited:
            return None
        if self.tokens:
            tokens = min(tokens, self.tokens)  # one oversized request still goes, alone
        while True:
            with self._lock:
                now = self.clock()
                while self._spent and self._spent[0][0] <= now - 60.0:
                    self._spent.popleft()
                used = sum(t for _, t in self._spent)
                ok_req = not self.requests or len(self._spent) < self.requests
                ok_tok = not self.tokens or used + tokens <= self.tokens
                if ok_req and ok_tok:
                    entry = [now, float(tokens)]
                    self._spent.append(entry)
                    return entry
                wait_s = (self._spent[0][0] + 60.0 - now) if self._spent else 0.05
            self.sleep(max(0.01, min(wait_s, 1.0)))

    def settle(self, entry: list[float] | None, actual_tokens: int | None) -> None:
        """Replace a request's estimate with the tokens the reply says it used."""
        if entry is not None and actual_tokens is not None:
            with self._lock:
                entry[1] = float(actual_tokens)


class AnswerCache:
    """Answers received so far, one JSON line each (`{"key", "response"}`), appended and flushed as they arrive."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._known: dict[str, dict[str, Any]] = {}
        self._fh = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            raw = self.path.read_bytes()
            keep = raw[: raw.rfind(b"\n") + 1]  # a line torn by a kill is dropped
            for line in keep.splitlines():
                try:
                    rec = json.loads(line)
                    self._known[rec["key"]] = rec["response"]
                except (ValueError, KeyError, TypeError):
                    continue
            if len(keep) != len(raw):
                self.path.write_bytes(keep)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, key: str) -> dict[str, Any] | None:
        return self._known.get(key)

    def put(self, key: str, response: dict[str, Any]) -> None:
        with self._lock:
            self._known[key] = response
            if self._fh is not None:
                self._fh.write(json.dumps({"key": key, "response": response}) + "\n")
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def request_key(url: str, body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([url, body], sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ApiClient:
    """POST JSON bodies to `url` (…/chat/completions) concurrently, with retries, a budget and a resume cache."""

    def __init__(self, url: str, config: ApiConfig | None = None, cache: Path | str | None = None,
                 seed: int = 0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url
        self.cfg = config or ApiConfig()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint {url!r}: must be an http:// or https:// URL")
        self._parts = parts
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.cache = AnswerCache(cache)
        self.budget = MinuteBudget(self.cfg.requests_per_minute, self.cfg.tokens_per_minute, sleep=sleep)
        self.sleep = sleep
        self._rng = random.Random(seed)  # jitter only: never touches what is asked or answered
        self._rng_lock = threading.Lock()
        self._local = threading.local()
        self.stats = {"sent": 0, "retried": 0, "cached": 0, "rate_limited": 0}
        self._stats_lock = threading.Lock()

    # -- one request -----------------------------------------------------------------------------

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(self._parts.hostname, self._parts.port, timeout=self.cfg.timeout_s)
            self._local.conn = conn
        return conn

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _count(self, name: str) -> None:
        with self._stats_lock:
            self.stats[name] += 1

    def _backoff(self, attempt: int) -> float:
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_s * (2 ** attempt))
        with self._rng_lock:
            return self._rng.uniform(0.5 * cap, cap)

    def _send(self, payload: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.cfg.api_key:
            headers["Authorization"] = f"Bearer {self.cfg.api_key}"
        conn = self._conn()
        try:
            conn.request("POST", self._path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self._drop_conn()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self._drop_conn()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """One request: the cached answer, or the endpoint's after up to `max_retries` retries."""
        key = request_key(self.url, body)
        hit = self.cache.get(key)
        if hit is not None:
            self._count("cached")
            return hit
        payload = json.dumps(body).encode("utf-8")
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            entry = self.budget.acquire(estimate_tokens(body))
            self._count("sent")
            try:
                status, headers, data = self._send(payload)
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
                delay = self._backoff(attempt)
            else:
                if status == 200:
                    try:
                        answer = json.loads(data.decode("utf-8"))
                    except (ValueError, UnicodeDecodeError):
                        raise RuntimeError(f"endpoint {self.url}: the reply is not JSON: {data[:200]!r}") from None
                    usage = answer.get("usage") if isinstance(answer, dict) else None
                    self.budget.settle(entry, usage.get("total_tokens") if isinstance(usage, dict) else None)
                    self.cache.put(key, answer)
                    return answer
                detail = data.decode("utf-8", "replace")[:200]
                if status in BAD_INPUT_STATUSES:
                    raise EndpointRejected(f"endpoint {self.url}: HTTP {status} {detail}".strip())
                last = f"HTTP {status} {detail}".strip()
                if status not in RETRY_STATUSES:
                    break
                if status == 429:
                    self._count("rate_limited")
                told = retry_after_s(headers.get("retry-after"))
                delay = told if told is not None else self._backoff(attempt)
            if attempt < self.cfg.max_retries:
                self._count("retried")
                self.sleep(min(delay, self.cfg.backoff_max_s * 5))
        raise RuntimeError(f"endpoint {self.url}: gave up after {self.cfg.max_retries + 1} attempts: {last}")

    # -- many requests -----------------------------------------------------------------------------

    def map(self, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every body's answer, in the order given; at most `max_concurrency` in flight.

        The first request that fails for good stops new ones from starting; answers already received
        stay in the cache for the next attempt, and the error is raised.
        """
        n = max(1, int(self.cfg.max_concurrency))
        if n == 1 or len(bodies) <= 1:
            return [self.post(b) for b in bodies]
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="api") as pool:
            futures = [pool.submit(self.post, b) for b in bodies]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
            if failed is not None:
                for f in pending:
                    f.cancel()
                raise failed.exception()  # type: ignore[misc]
            return [f.result() for f in futures]

    def close(self) -> None:
        self.cache.close()
        self._drop_conn()
