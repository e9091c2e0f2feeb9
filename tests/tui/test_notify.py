"""Terminal notifications: the app, on a pseudo-terminal, writes OSC 9 (or OSC 777) and the bell when a
job fails and when its experiment ends; the sequences themselves for each LABDECK_NOTIFY mode."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from tui.notify import sequences

REPO = Path(__file__).resolve().parents[2]


def test_sequences_per_mode_and_terminal() -> None:
    assert sequences("T", "b;ody", {"TERM": "xterm-256color"}) == ["\x1b]9;T: b;ody\x07", "\x07"]
    assert sequences("T;x", "b;ody", {"TERM": "rxvt-unicode"}) == ["\x1b]777;notify;T,x;b,ody\x07", "\x07"]
    assert sequences("T", "b", {"LABDECK_NOTIFY": "osc777"}) == ["\x1b]777;notify;T;b\x07"]
    assert sequences("T", "b", {"LABDECK_NOTIFY": "bell"}) == ["\x07"]
    assert sequences("T", "b", {"LABDECK_NOTIFY": "off"}) == []
    assert sequences("T\x1b]0;evil\x07", "b\n", {"LABDECK_NOTIFY": "osc9"}) == ["\x1b]9;T ]0;evil : b \x07"]
    assert sequences("T", "b", {"LABDECK_NOTIFY": "osc9", "TMUX": "/tmp/tmux-0/default,1,0"}) == \
        ["\x1bPtmux;\x1b\x1b]9;T: b\x07\x1b\\"]


def _end_job(home: Path, name: str, ok: bool) -> int:
    from db.models import JobStatus
    from db.queue import claim, enqueue, transition
    from db.session import open_store
    from engine.specfile import expand

    store = open_store(home)
    exp = expand({"experiment": "pty-exp", "name": name, "kind": "command", "command": ["true"]})
    with store.write() as s:
        (jid,) = enqueue(s, exp.drafts, resolve=exp.resolver(home))
        assert claim(s, jid, run_dir=str(home / "runs" / str(jid)))
        transition(s, jid, JobStatus.succeeded if ok else JobStatus.failed, exit_code=0 if ok else 1,
                   failure_reason=None if ok else "nonzero_exit", finished_at=time.time())
    store.dispose()
    return jid


@pytest.mark.timeout(120)
def test_the_app_on_a_pty_notifies_a_failed_job_and_the_experiment_end(home: Path) -> None:
    from db.session import open_store

    open_store(home).dispose()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(REPO), "LABDECK_REFRESH_S": "0.2",
           "LABDECK_NOTIFY": "auto"}
    env.pop("TMUX", None)
    app = subprocess.Popen([sys.executable, "-c", f"from tui.app import run_app; run_app({str(home)!r}, start_worker=False)"],
                           stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            out.extend(chunk)

    threading.Thread(target=read, daemon=True).start()

    def wait_for(needle: bytes, poke: bool = False) -> None:
        deadline = time.monotonic() + 60
        while needle not in out:
            assert app.poll() is None, bytes(out[-2000:])
            assert time.monotonic() < deadline, f"no {needle!r} in the app's output: {bytes(out[-2000:])!r}"
            if poke:  # another commit, so the app's poll sees a change even if it missed the first
                _touch(home)
            time.sleep(0.2)

    try:
        wait_for(b"labdeck")  # the first frame
        _end_job(home, "first", ok=True)
        _end_job(home, "second", ok=False)
        wait_for(b"\x1b]9;labdeck: second failed: job", poke=True)
        wait_for(b"\x1b]9;labdeck: pty-exp ended with failures: 1 failed, 1 succeeded\x07\x07", poke=True)
        assert out.count(b"\x1b]9;") == 2  # the success alone raised nothing
    finally:
        os.write(master, b"q")
        try:
            app.wait(20)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        os.close(master)


def _touch(home: Path) -> None:
    from db.queue import set_setting
    from db.session import open_store

    store = open_store(home)
    with store.write() as s:
        set_setting(s, "test-poke", str(time.time()))
    store.dispose()
