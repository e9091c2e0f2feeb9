"""The real `labdeck` in a real terminal (tmux, 80x24), driven as a new user would drive it.

Open it on an empty home: the app starts a worker; queue a `command` job from the menus, see it
run to `succeeded` in the table, open it, read its spec and its output in the log tab, open the
results, quit; then check the job's state in the store. A worker that does not start fails the test.

Run by hand: `pytest tests/tui/test_tmux.py -s` prints every screen it waited for.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

ROOT = Path(__file__).resolve().parents[2]


class Tmux:
    """One private tmux server (its own socket), one window (80x24 unless told) running a command."""

    def __init__(self, command: list[str], env: dict[str, str], size: tuple[int, int] = (80, 24)) -> None:
        self.socket = f"labdeck-test-{os.getpid()}-{time.monotonic_ns()}"
        # Textual believes COLUMNS/LINES over the terminal: a value inherited from the caller would win
        env = {**env, "COLUMNS": str(size[0]), "LINES": str(size[1])}
        exports = " ".join(f"{k}={v!s}" for k, v in env.items())
        line = f"env {exports} " + " ".join(command)
        if size == (80, 24):
            self._tmux("new-session", "-d", "-s", "w", "-x", "80", "-y", "24", line)
        else:  # a detached session may start at tmux's default size: fix the size, then start the command
            self._tmux("new-session", "-d", "-s", "w", "-x", str(size[0]), "-y", str(size[1]), "sleep 600")
            self._tmux("set-option", "-g", "window-size", "manual")
            self._tmux("resize-window", "-t", "w", "-x", str(size[0]), "-y", str(size[1]))
            self._tmux("respawn-pane", "-k", "-t", "w", line)
        # tmux holds a lone Escape for 500 ms to see whether a sequence follows, so "Escape q"
        # arrives as alt+q; people who use vim or labdeck in tmux set this low, as here.
        self._tmux("set-option", "-s", "escape-time", "10")

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=False)
        return out.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "w")

    def keys(self, *keys: str, literal: bool = False) -> None:
        # A terminal app cannot tell Escape-then-q from alt+q (ESC q) but by time: a person never
        # types them 1 ms apart, a script does. So after an Escape the tests wait for the screen
        # the Escape leads to before the next key.
        self._tmux("send-keys", "-t", "w", *(["-l"] if literal else []), *keys)

    def wait_for(self, *texts: str, timeout: float = 20.0) -> str:
        """Wait until any of `texts` shows; the screen then."""
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.screen()
            if any(t in screen for t in texts):
                print(f"--- saw {texts!r}\n{screen}")
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{texts!r} never showed; the screen:\n{screen}")

    def alive(self) -> bool:
        return "w" in self._tmux("list-sessions", "-F", "#{session_name}").split()

    def close(self) -> None:
        self._tmux("kill-server")


def test_new_user_queues_a_job_from_the_menus_and_quits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "LABDECK_REFRESH_S": "0.5", "HOME": str(tmp_path)}
    t = Tmux([sys.executable, "-m", "cli", "--home", str(home)], env)
    worker_started = False
    try:
        t.wait_for("No jobs yet")  # first start: an empty home, a hint
        # the app starts a worker (in a thread) on first start
        first = t.wait_for("worker ● running", "No worker", "Could not start a worker", timeout=40)
        assert "worker ● running" in first, f"the app did not start a worker:\n{first}"
        worker_started = True
        t.keys("n")
        t.wait_for("choose a kind or a preset")
        t.keys("Enter")  # "command", the first kind in the menu
        t.wait_for("New job  command")
        t.keys("python -c 'print(6 * 7)'", literal=True)  # the cursor waits in the command field
        t.wait_for("valid")
        t.keys("C-s")
        t.wait_for("Queued job 1")
        screen = t.wait_for("jobs 1–1 of 1")
        assert "command" in screen
        t.wait_for("succeeded", timeout=60)
        t.keys("Enter")  # open it
        t.wait_for("Overview  Log  Charts")
        t.keys("s")
        t.wait_for("print(6 * 7)")  # the spec, as queued
        t.keys("l")
        t.wait_for("42")
        t.keys("Escape")
        t.wait_for("jobs 1–1 of 1")
        t.keys("2")  # results of its experiment
        t.wait_for("no job has reported a metric yet")
        t.keys("Escape")
        t.wait_for("jobs 1–1 of 1")
        t.keys("q")
        end = time.monotonic() + 10
        while t.alive() and time.monotonic() < end:
            time.sleep(0.1)
        assert not t.alive(), f"q did not quit:\n{t.screen()}"
    finally:
        t.close()
        if worker_started:  # the worker outlives the app by design; this one belongs to the test
            subprocess.run([sys.executable, "-m", "cli", "--home", str(home), "worker", "stop", "--now", "--wait"],
                           env={**os.environ, **env}, capture_output=True, timeout=60, check=False)
    con = sqlite3.connect(home / "labdeck.db")
    (status,) = con.execute("SELECT status FROM job WHERE id = 1").fetchone()
    con.close()
    assert status == "succeeded"


def test_a_pipeline_at_120_columns_full_names_its_metric_and_its_stages(tmp_path: Path) -> None:
    """The demo's pipeline half-way through: full job names, results on the judges' win rate by
    student and teacher, `e` lists the experiment with its stages and matrix points."""
    sys.path.insert(0, str(Path(__file__).parent))
    from tui_seed_pipeline import seed_pipeline

    from db.session import Store

    home = tmp_path / "home"
    store = Store(home)
    seed_pipeline(store)
    store.dispose()
    env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "LABDECK_REFRESH_S": "0.5", "HOME": str(tmp_path)}
    # no worker: the scene stays as seeded (the first test covers starting one)
    code = f"from tui.app import run_app; run_app({str(home)!r}, start_worker=False)"
    t = Tmux([sys.executable, "-c", f'"{code}"'], env, size=(120, 36))
    try:
        screen = t.wait_for("jobs 1–31 of 31", timeout=40)
        for name in ("judge[teacher=teacher-c,student=student-llama]", "sft[teacher=teacher-a,student=student-qwen]"):
            assert name in screen
        t.keys("2")
        screen = t.wait_for("student \\ teacher")
        assert "win_rate" in screen and "student-llama" in screen and "teacher-a" in screen
        t.keys("e")
        screen = t.wait_for("experiments 1–1 of 1")
        screen = t.wait_for("waits on")
        for word in ("demo-car", "build", "generate", "compat", "sft", "answer", "judge", "teacher-a", "student-qwen"):
            assert word in screen, word
        t.keys("Enter")
        t.wait_for("31 jobs · columns teacher × student")  # the pipeline (the preview says "enter opens it")
        t.keys("Escape")
        t.wait_for("enter opens it")  # back on the experiments
        t.keys("q")
        end = time.monotonic() + 10
        while t.alive() and time.monotonic() < end:
            time.sleep(0.1)
        assert not t.alive(), f"q did not quit:\n{t.screen()}"
    finally:
        t.close()


def test_queue_a_recipes_tiny_variant_from_the_menu(tmp_path: Path) -> None:
    """`n` lists the shipped recipes; the last one's tiny variant is queued with the queue paused
    (nothing runs: only what was queued is checked)."""
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
        end = time.monotonic() + 20  # the recipes are read in a thread and appended to the menu
        while "--variant tiny" not in t.screen() and time.monotonic() < end:
            t.keys("End")  # the last recipe's tiny variant; the help line names the command it stands for
            time.sleep(0.3)
        t.wait_for("--variant tiny")
        t.keys("Enter")
        t.wait_for("queues")  # the preview: stages, jobs, GPUs each, downloads
        t.keys("C-s")
        t.wait_for("Queued")
        t.keys("q")
        end = time.monotonic() + 10
        while t.alive() and time.monotonic() < end:
            time.sleep(0.1)
    finally:
        t.close()
    con = sqlite3.connect(home / "labdeck.db")
    statuses = {s for (s,) in con.execute("SELECT status FROM job")}
    (queue,) = con.execute("SELECT value FROM setting WHERE key = 'queue_state'").fetchone()
    (exp,) = con.execute("SELECT name FROM experiment").fetchone()
    con.close()
    assert statuses == {"queued"} and queue == "paused" and exp
