"""Throughput of the API client against a local OpenAI-compatible endpoint with 200 ms latency.

The judge and correctness scorers used to send one request at a time; this measures requests per
second sequentially (max_concurrency 1) and at max_concurrency 16 in the same run, and prints the
ratio. Goal: >= 8x. Run: `.venv/bin/python bench/bench_api.py [N]`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.fake_endpoint import FakeEndpoint  # noqa: E402
from engine.jobs.api_client import ApiClient, ApiConfig  # noqa: E402


def run(url: str, n: int, concurrency: int) -> tuple[float, list]:
    bodies = [{"model": "judge", "messages": [{"role": "user", "content": f"q{concurrency}-{i}"}], "max_tokens": 1}
              for i in range(n)]
    client = ApiClient(url, ApiConfig(max_concurrency=concurrency))
    t0 = time.perf_counter()
    out = client.map(bodies)
    dt = time.perf_counter() - t0
    client.close()
    return n / dt, out


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    with FakeEndpoint(latency_s=0.2) as ep:
        url = ep.url + "/chat/completions"
        seq, _ = run(url, max(8, n // 8), 1)
        par, _ = run(url, n, 16)
    ratio = par / seq
    print(f"sequential: {seq:.2f} req/s   max_concurrency 16: {par:.2f} req/s   ratio {ratio:.1f}x (goal >= 8x)")
    return 0 if ratio >= 8 else 1


if __name__ == "__main__":
    sys.exit(main())
