"""The concurrent API client against a local OpenAI-compatible endpoint with 200 ms latency and 429s."""

from __future__ import annotations

import email.utils
import threading
import time
from pathlib import Path

import pytest

from engine.fake_endpoint import FakeEndpoint, fake_answer
from engine.jobs.api_client import ApiClient, ApiConfig, EndpointRejected, MinuteBudget, retry_after_s


def _bodies(n: int) -> list[dict]:
    return [{"model": "judge", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 1,
             "temperature": 0} for i in range(n)]


class Sleeps:
    """Records every delay the client asked for, and sleeps it for real."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, s: float) -> None:
        with self.lock:
            self.delays.append(s)
        time.sleep(s)


def test_concurrent_answers_equal_the_sequential_ones_in_order() -> None:
    bodies = _bodies(16)
    with FakeEndpoint(latency_s=0.2) as ep:
        seq = ApiClient(ep.url + "/chat/completions", ApiConfig(max_concurrency=1)).map(bodies)
        assert ep.max_in_flight == 1
        par = ApiClient(ep.url + "/chat/completions", ApiConfig(max_concurrency=8)).map(bodies)
        assert ep.max_in_flight == 8  # 16 requests of 200 ms each: eight were in flight together
    assert par == seq == [fake_answer(b) for b in bodies]


def test_429_with_retry_after_is_retried_after_the_given_delay() -> None:
    sleeps = Sleeps()
    with FakeEndpoint(latency_s=0.01, rate_limit_every=3, retry_after="0.3") as ep:
        client = ApiClient(ep.url + "/chat/completions", ApiConfig(max_concurrency=4, backoff_s=7.0, max_retries=10), sleep=sleeps)
        out = client.map(_bodies(12))
    assert out == [fake_answer(b) for b in _bodies(12)]
    assert ep.refused >= 4 and client.stats["rate_limited"] == ep.refused
    assert sleeps.delays and set(sleeps.delays) == {0.3}  # Retry-After, not the 3.5-7 s backoff


def test_without_retry_after_backoff_is_exponential_with_jitter() -> None:
    sleeps = Sleeps()
    with FakeEndpoint(latency_s=0.0, fail_status=503) as ep:
        client = ApiClient(ep.url + "/chat/completions", ApiConfig(max_retries=3, backoff_s=0.02), sleep=sleeps)
        with pytest.raises(RuntimeError, match="gave up after 4 attempts: HTTP 503"):
            client.post(_bodies(1)[0])
    assert len(sleeps.delays) == 3
    for k, d in enumerate(sleeps.delays):
        assert 0.01 * 2 ** k <= d <= 0.02 * 2 ** k


def test_bad_request_is_not_retried() -> None:
    with FakeEndpoint(latency_s=0.0, fail_status=401) as ep:
        client = ApiClient(ep.url + "/chat/completions", ApiConfig(max_concurrency=4))
        with pytest.raises(EndpointRejected, match="HTTP 401"):
            client.map(_bodies(3))
        assert client.stats["retried"] == 0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_800_000_000.0
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after_s("soon", now) is None and retry_after_s(None) is None


def test_a_killed_run_resumes_without_asking_again(tmp_path: Path) -> None:
    cache = tmp_path / "outputs" / "api_answers.jsonl"
    bodies = _bodies(10)
    with FakeEndpoint(latency_s=0.01) as ep:
        first = ApiClient(ep.url + "/chat/completions", ApiConfig(max_concurrency=4), cache=cache)
        first.map(bodies[:6])
        first.close()
        with open(cache, "a") as fh:
            fh.write('{"key": "torn by a ki')  # the kill hit mid-line
        second = ApiClient(ep.url + "/chat/completions", ApiConfig(max_concurrency=4), cache=cache)
        out = second.map(bodies)
        second.close()
    assert out == [fake_answer(b) for b in bodies]
    assert ep.total == 10 and set(ep.asked.values()) == {1}  # the first six were never asked twice
    assert second.stats["cached"] == 6 and len(cache.read_text().splitlines()) == 10


def test_minute_budget_holds_requests_back() -> None:
    t = [0.0]
    waited: list[float] = []

    def sleep(s: float) -> None:
        waited.append(s)
        t[0] += s

    b = MinuteBudget(requests=3, tokens=100, clock=lambda: t[0], sleep=sleep)
    for _ in range(3):
        b.acquire(10)
    assert not waited
    b.acquire(10)  # the fourth request in the minute waits for the first to leave the window
    assert t[0] >= 60.0
    b2 = MinuteBudget(requests=None, tokens=100, clock=lambda: t[0], sleep=sleep)
    e = b2.acquire(90)
    b2.settle(e, 20)  # the reply used fewer tokens than estimated: room for more at once
    start = t[0]
    b2.acquire(70)
    assert t[0] == start
