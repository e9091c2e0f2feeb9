"""The composer in a real terminal (tmux, 80x24): the field finder and saving a spec, keys as typed.

ctrl+f and ctrl+t must reach the app through tmux (whose prefix is ctrl+b); the saved spec must show
in the `n` menu and queue from there. The queue is paused: only what was queued is checked.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from test_tmux import ROOT, Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def _until(t: Tmux, text: str, key: str, timeout: float = 20.0) -> None:
    """Press `key` until `text` shows (moving down a menu to an entry)."""
    end = time.monotonic() + timeout
    while text not in t.screen():
        assert time.monotonic() < end, f"{text!r} never showed; the screen:\n{t.screen()}"
        t.keys(key)
        time.sleep(0.2)


def test_find_a_field_save_the_spec_and_queue_it_from_the_menu(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "LABDECK_REFRESH_S": "0.5", "HOME": str(tmp_path)}
    code = f"from tui.app import run_app; run_app({str(home)!r}, start_worker=False)"
    t = Tmux([sys.executable, "-c", f'"{code}"'], env)
    try:
        t.wait_for("No jobs yet", timeout=40)
        t.keys("p")
        t.wait_for("paused")
        t.keys("n")
        t.wait_for("choose a kind or a preset")
        _until(t, "LoRA adapters (r 8, alpha 16)", "Down")  # the preset's description in the help line
        t.keys("Enter")
        t.wait_for("Advanced")
        t.keys("C-f")
        t.wait_for("Go to field")
        t.keys("max_ste", literal=True)
        t.wait_for("stop after this many optimizer steps")
        t.keys("Enter")
        t.wait_for("max_steps  default:")  # the help line follows the focus
        t.keys("C-t")
        t.wait_for("Save to my specs")
        t.keys("Enter")  # the name offered: the job's
        t.wait_for("Saved")
        t.keys("Escape")
        t.wait_for("choose a kind or a preset")
        _until(t, "labdeck submit ~/home/specs/sft-lora.yaml", "Down")  # the help line of the saved spec
        t.keys("Enter")
        t.wait_for("queues 1 job")
        t.keys("C-s")
        t.wait_for("Queued")
        t.keys("q")
        end = time.monotonic() + 10
        while t.alive() and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        t.close()
    assert (home / "specs" / "sft-lora.yaml").is_file()
    con = sqlite3.connect(home / "labdeck.db")
    jobs = con.execute("SELECT name, status FROM job").fetchall()
    con.close()
    assert jobs == [("sft-lora", "queued")]
