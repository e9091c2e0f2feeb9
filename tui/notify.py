"""Terminal notifications: the app tells the user when a job fails or an experiment ends, over SSH too.

Why escape sequences and not a desktop library: the app usually runs on a GPU box reached over SSH,
often inside tmux; only bytes written to the terminal travel back to the user's machine. Terminals
turn OSC 9 (`ESC ] 9 ; text BEL`: iTerm2, WezTerm, Windows Terminal, Ghostty, kitty) or OSC 777
(`ESC ] 777 ; notify ; title ; text BEL`: rxvt-unicode, foot, Konsole, WezTerm) into a desktop
notification; the bell is the fallback every terminal has (a sound, a flash or an urgency hint).
Inside tmux the OSC is wrapped in tmux's passthrough (`set -g allow-passthrough on` lets it out).

`LABDECK_NOTIFY` chooses: `auto` (default: OSC 777 on terminals known for it, else OSC 9, and the
bell), `osc9`, `osc777`, `bell`, or `off`.

`EndWatch.check` runs in the app's polling thread (one indexed query when the store changed): it
reports jobs that ended after the app started and experiments that have nothing left to run.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

MODES = ("auto", "osc9", "osc777", "bell", "off")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_OSC777_TERMS = ("rxvt", "foot", "konsole")
FAILED = ("failed", "interrupted")


@dataclass(frozen=True)
class Notice:
    title: str
    body: str


def sequences(title: str, body: str, env: dict[str, str] | None = None) -> list[str]:
    """What to write to the terminal for one notice (pure: the tests read it back through a pty)."""
    env = dict(os.environ) if env is None else env
    mode = env.get("LABDECK_NOTIFY", "auto").strip().lower()
    mode = mode if mode in MODES else "auto"
    if mode == "off":
        return []
    title, body = _CONTROL.sub(" ", title), _CONTROL.sub(" ", body)
    out = []
    if mode == "auto":
        term = env.get("TERM", "") + " " + env.get("TERM_PROGRAM", "")
        mode_osc = "osc777" if any(t in term.lower() for t in _OSC777_TERMS) else "osc9"
    else:
        mode_osc = mode
    if mode_osc == "osc9":
        out.append(f"\x1b]9;{title}: {body}\x07")
    elif mode_osc == "osc777":
        out.append(f"\x1b]777;notify;{title.replace(';', ',')};{body.replace(';', ',')}\x07")
    if env.get("TMUX"):
        out = ["\x1bPtmux;" + s.replace("\x1b", "\x1b\x1b") + "\x1b\\" for s in out]
    if mode in ("auto", "bell"):
        out.append("\x07")
    return out


def notify_terminal(app: Any, notice: Notice) -> None:
    """Write the notice through the app's driver (call on the app's thread); a no-op when headless."""
    driver = getattr(app, "_driver", None)
    if driver is None or app.is_headless:
        return
    for seq in sequences(notice.title, notice.body):
        driver.write(seq)
    driver.flush()


class EndWatch:
    """Jobs that ended, and experiments that finished, since the app started (nothing older)."""

    def __init__(self, since: float | None = None) -> None:
        self.since = time.time() if since is None else since
        self._seen: set[int] = set()
        self._done: set[tuple[str, int, int]] = set()

    def check(self, store: Any) -> list[Notice]:
        """New notices; [] when the store cannot be read now (the poll reports that itself)."""
        try:
            return self._check(store)
        except Exception:  # noqa: BLE001 - a notice is never worth failing the app's poll
            return []

    def _check(self, store: Any) -> list[Notice]:
        from sqlalchemy import text

        notices = []
        with store.read() as s:
            rows = s.execute(text(
                "SELECT j.id, j.name, j.status, j.failure_reason, e.name FROM job j JOIN experiment e "
                "ON e.id = j.experiment_id WHERE j.finished_at >= :since AND j.status IN "
                "('succeeded', 'failed', 'interrupted') ORDER BY j.id"), {"since": self.since}).all()
            new = [r for r in rows if r[0] not in self._seen]
            self._seen.update(r[0] for r in new)
            for jid, name, status, reason, exp in new:
                if status in FAILED:
                    notices.append(Notice(f"labdeck: {name} {status}", f"job {jid} in {exp}: {reason or status}"))
            for exp in sorted({r[4] for r in new}):
                counts = dict(s.execute(text(
                    "SELECT j.status, count(*) FROM job j JOIN experiment e ON e.id = j.experiment_id "
                    "WHERE e.name = :e GROUP BY j.status"), {"e": exp}).all())
                if counts.get("queued") or counts.get("running"):
                    continue
                mark = (exp, sum(counts.values()), max(r[0] for r in new if r[4] == exp))
                if mark in self._done:
                    continue
                self._done.add(mark)
                ok = counts.get("succeeded", 0) == sum(counts.values())
                tally = ", ".join(f"{n} {st}" for st, n in sorted(counts.items()))
                notices.append(Notice(f"labdeck: {exp} {'finished' if ok else 'ended with failures'}", tally))
        return notices
