"""A local OpenAI-compatible chat endpoint that answers after a fixed latency: for tests, benchmarks, dry runs.

`FakeEndpoint(latency_s=0.2)` serves `POST /v1/chat/completions` from a thread of the calling
process. Its answers are a pure function of the request body (so a concurrent run can be compared
with a sequential one), with `logprobs` for the judge (tokens "m" and "M"), a yes/no reply for
the correctness judge, and a five-point verdict for an Arena-Hard prompt. It can refuse every k-th request with 429 and a `Retry-After` header, and it
counts what it was asked (per body, total, and the most requests in flight at once) so tests can
check that a resumed job did not ask again.

Standard library only; never used by labdeck itself.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def fake_answer(body: dict[str, Any]) -> dict[str, Any]:
    """The deterministic reply to a chat-completion body."""
    digest = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).digest()
    lp_m = -digest[0] / 64.0
    lp_M = -digest[1] / 64.0
    word = "yes" if digest[2] % 2 else "no"
    if any("[[A>>B]]" in str(m.get("content", "")) for m in body.get("messages") or []):  # Arena-Hard's judge prompt
        verdict = ("A>>B", "A>B", "A=B", "B>A", "B>>A")[digest[3] % 5]
        word = f"Both answers address the question. My final verdict is [[{verdict}]]."
    first = "m" if lp_m >= lp_M else "M"
    return {
        "id": "fake-" + digest[:6].hex(), "object": "chat.completion", "model": body.get("model", "fake"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": word},
                     "logprobs": {"content": [{"token": first, "logprob": max(lp_m, lp_M),
                                               "top_logprobs": [{"token": "m", "logprob": lp_m},
                                                                {"token": "M", "logprob": lp_M}]}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
    }


class FakeEndpoint:
    """Start with `with FakeEndpoint(...) as ep:`; `ep.url` is the base URL (…/v1)."""

    def __init__(self, latency_s: float = 0.2, rate_limit_every: int = 0, retry_after: str = "0.1",
                 fail_status: int | None = None) -> None:
        self.latency_s = latency_s
        self.rate_limit_every = rate_limit_every
        self.retry_after = retry_after
        self.fail_status = fail_status
        self.asked: Counter[str] = Counter()  # answered bodies, by hash of their messages
        self.total = 0
        self.refused = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        ep = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                with ep._lock:
                    ep.total += 1
                    n = ep.total
                    ep.in_flight += 1
                    ep.max_in_flight = max(ep.max_in_flight, ep.in_flight)
                try:
                    time.sleep(ep.latency_s)
                    if ep.fail_status is not None:
                        self._reply(ep.fail_status, {"error": {"message": "refused by the fake endpoint"}})
                        return
                    if ep.rate_limit_every and n % ep.rate_limit_every == 0:
                        with ep._lock:
                            ep.refused += 1
                        self._reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": ep.retry_after})
                        return
                    answer = fake_answer(body)
                    with ep._lock:
                        ep.asked[hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()] += 1
                    self._reply(200, answer)
                finally:
                    with ep._lock:
                        ep.in_flight -= 1

        return Handler
