"""Notification hooks: tell the user when a job fails or a whole experiment ends, wherever they are.

A home may hold `hooks.yaml`:

    hooks:
      - url: https://ntfy.sh/my-topic        # POST; format: json (default) | text (ntfy) | slack
        format: text
      - command: [notify-send, labdeck]      # an argument list (no shell); the JSON payload on stdin
        on: [job_failed, job_succeeded, experiment_done]

`on` defaults to job_failed and experiment_done. The payload names the experiment and the job,
its status and key metrics and, for a failure, the reason and the last log lines; never the
environment, and secret values found in the log lines are masked (`engine.secrets.redact`).

Why a thread: a hook is a network call or another program, and the worker must never wait for one.
The worker hands over the ids of jobs it just finished (`Notifier.ended`, a queue put); a daemon
thread reads the store (its own read-only connection), builds the events, and delivers each with a
timeout, retrying a failed delivery (2 s, then 10 s) and logging what failed once per hook per
minute. Each hook sends at most `max_per_minute` notifications a minute (default 10); the rest are
dropped and counted in the next one that goes out, so a sweep of 500 failing jobs cannot flood a
phone. hooks.yaml is read again whenever it changes; a bad file is logged and ignored.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import secrets

log = logging.getLogger("labdeck.hooks")
HOOKS_FILE = "hooks.yaml"
EVENTS = ("job_failed", "job_succeeded", "experiment_done")
DEFAULT_ON = ("job_failed", "experiment_done")
FAILED = ("failed", "interrupted")
ACTIVE = ("queued", "running")
RETRY_DELAYS_S = (2.0, 10.0)
TAIL_LINES = 20
MAX_METRICS = 12


class HooksError(ValueError):
    """hooks.yaml cannot be used: one line naming the hook and the field."""


@dataclass
class Hook:
    url: str | None = None
    command: list[str] | None = None
    format: str = "json"
    on: tuple[str, ...] = DEFAULT_ON
    timeout_s: float = 10.0
    max_per_minute: int = 10
    sent: list[float] = field(default_factory=list)  # send times in the last minute
    dropped: int = 0
    last_error_log: float = 0.0

    @property
    def label(self) -> str:
        """For the worker's log: a webhook's host only (Slack and ntfy URLs carry their secret in the path)."""
        if self.url:
            from urllib.parse import urlsplit

            return f"{urlsplit(self.url).scheme}://{urlsplit(self.url).hostname}/..."
        return (self.command or ["?"])[0]


def parse_hooks(data: Any, source: str = HOOKS_FILE) -> list[Hook]:
    if not isinstance(data, dict) or not isinstance(data.get("hooks"), list):
        raise HooksError(f"{source}: expected a mapping with a `hooks:` list")
    hooks = []
    for i, h in enumerate(data["hooks"]):
        where = f"{source}: hooks[{i}]"
        if not isinstance(h, dict):
            raise HooksError(f"{where}: expected a mapping with url or command")
        unknown = set(h) - {"url", "command", "format", "on", "timeout", "max_per_minute"}
        if unknown:
            raise HooksError(f"{where}.{sorted(unknown)[0]}: unknown field")
        url, command = h.get("url"), h.get("command")
        if (url is None) == (command is None):
            raise HooksError(f"{where}: give exactly one of url and command")
        if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise HooksError(f"{where}.url: must be an http:// or https:// URL")
        if command is not None and not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise HooksError(f"{where}.command: must be a non-empty list of strings (no shell)")
        fmt = h.get("format", "json")
        if fmt not in ("json", "text", "slack"):
            raise HooksError(f"{where}.format: json, text or slack")
        on = h.get("on", list(DEFAULT_ON))
        if not isinstance(on, list) or not set(on) <= set(EVENTS) or not on:
            raise HooksError(f"{where}.on: a list of {', '.join(EVENTS)}")
        hooks.append(Hook(url=url, command=command, format=fmt, on=tuple(on),
                          timeout_s=float(h.get("timeout", 10.0)), max_per_minute=int(h.get("max_per_minute", 10))))
    return hooks


def load_hooks(home: Path) -> list[Hook]:
    import yaml

    path = home / HOOKS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise HooksError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return parse_hooks(yaml.safe_load(text), str(path))
    except yaml.YAMLError as e:
        raise HooksError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None


# ----------------------------------------------------------------------------------------------
# Events: what happened, read from the store


def _metrics(conn: sqlite3.Connection, job_ids: list[int]) -> list[tuple[int, str, float]]:
    """The last value of each metric of each job: (job id, name, value)."""
    if not job_ids:
        return []
    marks = ",".join("?" * len(job_ids))
    return conn.execute(
        f"SELECT job_id, name, value FROM metric WHERE id IN (SELECT max(id) FROM metric "  # noqa: S608 - placeholders
        f"WHERE job_id IN ({marks}) GROUP BY job_id, name)", job_ids).fetchall()


def job_events(conn: sqlite3.Connection, job_ids: Iterable[int], home: Path) -> list[dict[str, Any]]:
    """One payload per ended job (succeeded or failed; cancelled and skipped jobs are the user's own doing)."""
    out = []
    redact = secrets.values_for_redaction(home)
    for jid in job_ids:
        row = conn.execute(
            "SELECT j.id, j.name, j.kind, j.status, j.failure_reason, j.failure_detail, j.log_tail, j.attempt, "
            "e.name FROM job j JOIN experiment e ON e.id = j.experiment_id WHERE j.id = ?", (jid,)).fetchone()
        if row is None or row[3] not in (*FAILED, "succeeded"):
            continue
        failed = row[3] in FAILED
        job = {"id": row[0], "name": row[1], "kind": row[2], "status": row[3], "attempt": row[7]}
        payload: dict[str, Any] = {"event": "job_failed" if failed else "job_succeeded", "experiment": row[8], "job": job,
                                   "metrics": {n: v for _, n, v in _metrics(conn, [jid])[:MAX_METRICS]}}
        if failed:
            job["reason"], job["detail"] = row[4], secrets.redact(row[5] or "", redact)
            payload["log_tail"] = secrets.redact("\n".join((row[6] or "").splitlines()[-TAIL_LINES:]), redact)
        what = f"failed ({row[4]}: {job['detail']})" if failed else "succeeded"
        payload["title"] = f"labdeck: {row[8]} / {row[1]} {row[3]}"
        payload["text"] = f"job {row[0]} {row[1]} ({row[8]}) {what}"
        out.append(payload)
    return out


def experiment_event(conn: sqlite3.Connection, experiment: str) -> dict[str, Any] | None:
    """The experiment's end, once none of its jobs is queued or running; None while some are."""
    rows = conn.execute("SELECT j.id, j.status FROM job j JOIN experiment e ON e.id = j.experiment_id "
                        "WHERE e.name = ? ORDER BY j.id", (experiment,)).fetchall()
    if not rows or any(st in ACTIVE for _, st in rows):
        return None
    counts: dict[str, int] = {}
    for _, st in rows:
        counts[st] = counts.get(st, 0) + 1
    # key metrics: those of the latest jobs first (the last stage: win rates, not the teachers' losses)
    summary: dict[str, dict[str, float]] = {}
    for _jid, name, value in sorted(_metrics(conn, [j for j, st in rows if st == "succeeded"]), key=lambda m: -m[0]):
        if name not in summary and len(summary) >= MAX_METRICS:
            continue
        s = summary.setdefault(name, {"n": 0, "sum": 0.0, "min": value, "max": value})
        s["n"] += 1
        s["sum"] += value
        s["min"], s["max"] = min(s["min"], value), max(s["max"], value)
    metrics = {n: {"mean": s["sum"] / s["n"], "min": s["min"], "max": s["max"], "n": int(s["n"])} for n, s in summary.items()}
    ok = counts.get("succeeded", 0) == len(rows)
    tally = ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
    return {"event": "experiment_done", "experiment": experiment, "status": "succeeded" if ok else "failed",
            "counts": counts, "metrics": metrics, "title": f"labdeck: {experiment} {'finished' if ok else 'ended with failures'}",
            "text": f"experiment {experiment}: {tally}"}


# ----------------------------------------------------------------------------------------------
# Delivery


def _body(hook: Hook, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    if hook.format == "text":  # ntfy: the message is the body, the title a header
        return payload["text"].encode(), {"Title": payload["title"].encode("ascii", "replace").decode(),
                                          "Content-Type": "text/plain; charset=utf-8"}
    if hook.format == "slack":
        return json.dumps({"text": f"*{payload['title']}*\n{payload['text']}"}).encode(), {"Content-Type": "application/json"}
    return json.dumps(payload).encode(), {"Content-Type": "application/json"}


def deliver(hook: Hook, payload: dict[str, Any]) -> None:
    """One attempt; raises on any failure (HTTP status >= 400, a non-zero exit, a timeout)."""
    body, headers = _body(hook, payload)
    if hook.url:
        req = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only, checked
        with urllib.request.urlopen(req, timeout=hook.timeout_s) as resp:  # noqa: S310
            resp.read()
        return
    assert hook.command is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABDECK_")}
    env.update({"LABDECK_EVENT": payload["event"], "LABDECK_EXPERIMENT": str(payload.get("experiment", "")),
                "LABDECK_TITLE": payload["title"], "LABDECK_TEXT": payload["text"]})
    p = subprocess.run(hook.command, input=json.dumps(payload).encode(), env=env, timeout=hook.timeout_s,  # noqa: S603
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {p.stderr.decode(errors='replace').strip()[-200:]}")


class Notifier:
    """The worker's side: `ended(ids)` returns at once; a daemon thread does the rest."""

    def __init__(self, home: Path, db_path: Path) -> None:
        self.home, self.db_path = home, db_path
        self._queue: queue.Queue[list[int] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._hooks: list[Hook] = []
        self._hooks_mtime: float | None = None
        self._announced: dict[str, tuple[int, int]] = {}  # experiment -> (jobs, newest id) when its end was sent
        self.host = socket.gethostname()

    def ended(self, job_ids: Iterable[int]) -> None:
        ids = list(job_ids)
        if not ids or not (self.home / HOOKS_FILE).exists():
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="labdeck-hooks", daemon=True)
            self._thread.start()
        self._queue.put(ids)

    def close(self, timeout_s: float = 5.0) -> None:
        """Let queued notifications go out for a moment (a graceful stop), then leave."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)

    def _current_hooks(self) -> list[Hook]:
        try:
            mtime = (self.home / HOOKS_FILE).stat().st_mtime
        except OSError:
            return []
        if mtime != self._hooks_mtime:
            self._hooks_mtime = mtime
            try:
                self._hooks = load_hooks(self.home)
            except HooksError as e:
                log.error("hooks: %s; no notifications until it is fixed", e)
                self._hooks = []
        return self._hooks

    def _run(self) -> None:
        while True:
            ids = self._queue.get()
            if ids is None:
                return
            try:
                self.process(ids)
            except Exception:  # noqa: BLE001 - a notification must never take the worker down
                log.exception("hooks: could not build notifications")

    def events_for(self, job_ids: list[int]) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            events = job_events(conn, job_ids, self.home)
            exps = conn.execute(
                f"SELECT DISTINCT e.name FROM job j JOIN experiment e ON e.id = j.experiment_id "  # noqa: S608
                f"WHERE j.id IN ({','.join('?' * len(job_ids))})", job_ids).fetchall()
            for (name,) in exps:
                ev = experiment_event(conn, name)
                if ev is None:
                    continue
                mark = tuple(conn.execute("SELECT count(*), max(j.id) FROM job j JOIN experiment e ON "
                                          "e.id = j.experiment_id WHERE e.name = ?", (name,)).fetchone())
                if self._announced.get(name) != mark:  # two jobs ending together announce it once
                    self._announced[name] = mark  # type: ignore[assignment]
                    events.append(ev)
        finally:
            conn.close()
        for ev in events:
            ev["home"], ev["host"], ev["time"] = str(self.home), self.host, time.time()
        return events

    def process(self, job_ids: list[int]) -> None:
        hooks = self._current_hooks()
        if not hooks:
            return
        for ev in self.events_for(job_ids):
            for hook in hooks:
                if ev["event"] in hook.on:
                    self._send(hook, ev)

    def _send(self, hook: Hook, payload: dict[str, Any]) -> None:
        now = time.monotonic()
        hook.sent = [t for t in hook.sent if now - t < 60]
        if len(hook.sent) >= hook.max_per_minute:
            hook.dropped += 1
            return
        hook.sent.append(now)
        if hook.dropped:
            payload = {**payload, "dropped": hook.dropped, "text": f"{payload['text']} (+{hook.dropped} more not sent)"}
            hook.dropped = 0
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            time.sleep(delay)
            try:
                deliver(hook, payload)
                return
            except Exception as e:  # noqa: BLE001 - HTTP, OS, timeout: retried, then logged
                last = f"{type(e).__name__}: {e}"
                if attempt < len(RETRY_DELAYS_S):
                    continue
        if time.monotonic() - hook.last_error_log > 60:
            hook.last_error_log = time.monotonic()
            log.warning("hooks: %s failed after %d attempts (%s); %s dropped", hook.label,
                        len(RETRY_DELAYS_S) + 1, last, payload["event"])
