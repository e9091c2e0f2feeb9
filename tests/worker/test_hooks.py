"""Notification hooks under a real worker: a local HTTP receiver and a command hook get the job's end
and the experiment's, with metrics, reason and log lines, secrets masked; a stuck hook never holds
the worker back; a failing one is retried, then logged; a burst is capped."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from worker_helpers import PY, ThreadWorker, submit, wait_for, wait_status

from engine import hooks, secrets

pytestmark = pytest.mark.timeout(90)
VALUE = "sk-hook-test-7a6b5c4d3e"


class Receiver:
    """An HTTP server in a thread that records every POST; `fail_first` answers 500 that many times;
    `hold` (an Event) makes each request wait until it is set."""

    def __init__(self, fail_first: int = 0, hold: threading.Event | None = None) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.attempts += 1
                if hold is not None:
                    hold.wait(30)
                if outer.attempts <= fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.bodies.append(body)
                outer.headers.append(dict(self.headers))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/topic"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(b) for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(hooks, "RETRY_DELAYS_S", (0.05, 0.05))


def write_hooks(home: Path, *entries: dict) -> None:
    (home / hooks.HOOKS_FILE).write_text(yaml.safe_dump({"hooks": list(entries)}))


def test_a_webhook_and_a_command_get_job_and_experiment_ends_without_secrets(home, store, receiver, tmp_path) -> None:
    secrets.set_secret(home, "MY_API_KEY", VALUE)
    out = tmp_path / "command-hook.jsonl"
    write_hooks(home, {"url": receiver.url, "on": list(hooks.EVENTS)},
                {"command": [PY, "-c", f"import sys; open({str(out)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"]})
    good = submit(store, [PY, "-c", "from engine.events import Reporter; r = Reporter(); r.metric('win_rate', 0.75)"],
                  experiment="exp1", name="good")
    bad = submit(store, [PY, "-c", "import os, sys; print('token', os.environ['MY_API_KEY']); print('boom'); sys.exit(5)"],
                 experiment="exp1", name="bad")
    with ThreadWorker(home):
        wait_status(store, good)
        wait_status(store, bad)
        events = wait_for(lambda: len(receiver.events()) >= 3 and receiver.events(), what="3 notifications")
        lines = wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 2 and out.read_text().splitlines(),
                         what="the command hook's 2 notifications")
    by_event = {(e["event"], e.get("job", {}).get("id")): e for e in events}
    ok = by_event[("job_succeeded", good)]
    assert ok["experiment"] == "exp1" and ok["metrics"] == {"win_rate": 0.75} and "log_tail" not in ok
    failed = by_event[("job_failed", bad)]
    assert failed["job"]["status"] == "failed" and failed["job"]["reason"] == "nonzero_exit"
    assert failed["log_tail"].splitlines()[-2:] == ["token ***", "boom"]
    done = by_event[("experiment_done", None)]
    assert done["status"] == "failed" and done["counts"] == {"failed": 1, "succeeded": 1}
    assert done["metrics"]["win_rate"]["mean"] == 0.75 and done["text"] == "experiment exp1: 1 failed, 1 succeeded"
    assert all(VALUE not in b.decode() for b in receiver.bodies)
    from_command = [json.loads(x) for x in lines]  # default `on`: failures and experiment ends only
    assert sorted(e["event"] for e in from_command) == ["experiment_done", "job_failed"]
    assert VALUE not in out.read_text()


def test_a_stuck_hook_never_holds_the_worker_back(home, store) -> None:
    hold = threading.Event()
    stuck = Receiver(hold=hold)
    try:
        write_hooks(home, {"url": stuck.url, "on": ["job_succeeded"], "timeout": 30})
        first = submit(store, [PY, "-c", "pass"], name="first")
        with ThreadWorker(home):
            wait_status(store, first)
            wait_for(lambda: stuck.attempts == 1, what="the hook to be called")
            second = submit(store, [PY, "-c", "pass"], name="second")
            assert wait_status(store, second) == "succeeded"
            assert stuck.attempts == 1 and not hold.is_set()  # the first delivery is still waiting
            hold.set()
            wait_for(lambda: len(stuck.bodies) == 2, what="both deliveries after the release")
    finally:
        hold.set()
        stuck.close()


def test_a_failing_hook_is_retried_then_logged_once(home, store, caplog) -> None:
    flaky = Receiver(fail_first=2)  # two 500s, then 200: the third attempt gets through
    down = Receiver(fail_first=100)
    try:
        write_hooks(home, {"url": flaky.url, "on": ["job_succeeded"]}, {"url": down.url, "on": ["job_succeeded"]})
        ids = [submit(store, [PY, "-c", "pass"], name=f"j{i}") for i in range(2)]
        with caplog.at_level(logging.WARNING, logger="labdeck.hooks"), ThreadWorker(home):
            for i in ids:
                wait_status(store, i)
            wait_for(lambda: len(flaky.bodies) == 2 and down.attempts == 6, what="every attempt")
            wait_for(lambda: any("failed after 3 attempts" in r.getMessage() for r in caplog.records), what="the log line")
        assert flaky.attempts == 4  # 3 for the first notification, 1 for the second
        failures = [r.getMessage() for r in caplog.records if "failed after" in r.getMessage()]
        assert len(failures) == 1 and "/topic" not in failures[0]  # logged once a minute; the URL's path kept out
    finally:
        flaky.close()
        down.close()


def test_a_burst_is_capped_per_minute_and_the_next_one_counts_what_was_dropped(receiver) -> None:
    hook = hooks.parse_hooks({"hooks": [{"url": receiver.url, "max_per_minute": 2}]})[0]
    notifier = hooks.Notifier(Path("/nonexistent"), Path("/nonexistent.db"))
    for i in range(5):
        notifier._send(hook, {"event": "job_failed", "title": "t", "text": f"job {i}"})
    assert [e["text"] for e in receiver.events()] == ["job 0", "job 1"] and hook.dropped == 3
    hook.sent = []  # a minute later
    notifier._send(hook, {"event": "job_failed", "title": "t", "text": "job 5"})
    assert receiver.events()[-1]["text"] == "job 5 (+3 more not sent)" and receiver.events()[-1]["dropped"] == 3


@pytest.mark.parametrize(("data", "message"), [
    ({"hooks": [{"url": "ftp://x"}]}, "hooks[0].url: must be an http:// or https:// URL"),
    ({"hooks": [{"command": "notify-send hi"}]}, "hooks[0].command: must be a non-empty list of strings (no shell)"),
    ({"hooks": [{"url": "http://x", "command": ["a"]}]}, "hooks[0]: give exactly one of url and command"),
    ({"hooks": [{"url": "http://x", "on": ["job_started"]}]}, "hooks[0].on: a list of job_failed, job_succeeded, experiment_done"),
    ({"hooks": [{"url": "http://x", "retries": 3}]}, "hooks[0].retries: unknown field"),
    ({"hook": []}, "expected a mapping with a `hooks:` list"),
])
def test_bad_hooks_files_say_which_field(data, message) -> None:
    with pytest.raises(hooks.HooksError) as e:
        hooks.parse_hooks(data, "hooks.yaml")
    assert str(e.value) == f"hooks.yaml: {message}"
