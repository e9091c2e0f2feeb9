"""Helpers for the worker tests: submitting command jobs, running a worker, waiting for states."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db.models import Job, Metric
from db.queue import enqueue
from db.session import Store
from engine.specfile import expand

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TERMINAL = ("succeeded", "failed", "cancelled", "interrupted", "skipped")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def write_script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def submit(store: Store, command: list[str] | None = None, *, script: Path | None = None, **fields: Any) -> int:
    """Queue one `command` job through the real spec path; returns its id."""
    data: dict[str, Any] = {"experiment": fields.pop("experiment", "t"), "name": fields.pop("name", "job"),
                            "kind": "command", "command": command or [PY, str(script)]}
    data.update(fields)
    exp = expand(data)
    with store.write() as s:
        return enqueue(s, exp.drafts, resolve=exp.resolver(store.home))[0]


def job(store: Store, job_id: int) -> Job:
    with store.read() as s:
        row = s.get(Job, job_id)
        assert row is not None
        s.expunge(row)  # read() rolls back, which would expire a still attached row
        return row


def status(store: Store, job_id: int) -> str:
    st = job(store, job_id).status
    return st.value if hasattr(st, "value") else st


def metrics(store: Store, job_id: int, name: str | None = None) -> list[tuple[str, int | None, float]]:
    with store.read() as s:
        q = select(Metric.name, Metric.step, Metric.value).where(Metric.job_id == job_id)
        if name:
            q = q.where(Metric.name == name)
        return [tuple(r) for r in s.execute(q.order_by(Metric.id)).all()]


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_status(store: Store, job_id: int, want: str | tuple[str, ...] = TERMINAL, timeout: float = 20.0) -> str:
    wanted = (want,) if isinstance(want, str) else want
    return wait_for(lambda: (st := status(store, job_id)) in wanted and st, timeout, what=f"job {job_id} {wanted}")


class ThreadWorker:
    """A worker running in a thread of the test process: fast to start, easy to stop."""

    def __init__(self, home: Path, **config: Any) -> None:
        from engine.gpus import open_inventory
        from engine.worker import Config, WorkerDaemon

        defaults = {"poll_s": 0.05, "heartbeat_s": 0.5, "kill_grace_s": 1.0}
        defaults.update(config)
        inventory = defaults.pop("inventory", None) or open_inventory()
        self.daemon = WorkerDaemon(Config(home=home, **defaults), inventory=inventory)
        self._stop = threading.Event()
        self._round = threading.Condition()
        self.rounds = 0  # rounds the worker has finished
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.daemon.run(until=self._round_done)
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def _round_done(self) -> bool:
        """Called by the worker after each round (`WorkerDaemon.run(until=...)`)."""
        with self._round:
            self.rounds += 1
            self._round.notify_all()
        return self._stop.is_set()

    def wait_rounds(self, n: int = 2, timeout: float = 20.0) -> None:
        """Wait until the worker has finished `n` more rounds: whatever a round would do with the store
        as it is now (start a job, record one) has been done. A check that something did NOT happen
        follows this, never a guessed delay."""
        with self._round:
            target = self.rounds + n
            ok = self._round.wait_for(lambda: self.rounds >= target or not self.thread.is_alive(), timeout)
        assert self.error is None, self.error
        assert ok and self.rounds >= target, f"the worker did not finish {n} rounds in {timeout}s"

    def __enter__(self) -> ThreadWorker:
        self.daemon.register()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "worker thread did not stop"
        assert self.error is None, self.error


class ProcWorker:
    """A worker in its own process (`python -m engine.daemon`), as in production; kill -9 able."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.log = open(home / "test-worker.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [PY, "-m", "engine.daemon", "--home", str(home), "--poll", "0.05", "--heartbeat", "0.5",
             "--grace", "1", *args],
            env=env or child_env(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()


def fork_worker(home: Path, **config: Any) -> int:
    """A worker in a forked child of the test process: a real process (kill -9 able) without an
    interpreter start-up, so crash trials stay fast. Returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        from engine.control import WorkerLock
        from engine.daemonize import setup_logging
        from engine.worker import Config, WorkerDaemon

        os.setsid()
        fd = os.open(home / "test-worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        setup_logging(home, detached=False)
        lock = WorkerLock(home)
        if not lock.acquire(5.0):
            os._exit(3)
        defaults = {"poll_s": 0.05, "heartbeat_s": 0.5, "kill_grace_s": 1.0}
        defaults.update(config)
        daemon = WorkerDaemon(Config(home=home, **defaults))
        daemon.install_signals()
        code = daemon.run()
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def reap(pid: int, timeout: float = 10.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status_ = os.waitpid(pid, os.WNOHANG)
        if done:
            return status_
        time.sleep(0.02)
    return None


def pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def processes_of_run(run_dir: str) -> list[int]:
    from engine.process import processes_with_env

    return processes_with_env("LABDECK_RUN_DIR", run_dir)


def fake_gpus(path: Path, gpus: list[dict[str, Any]]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"gpus": gpus}))
    tmp.replace(path)
    return path


def gpu(index: int, total_mb: float = 81920, used_mb: float = 0, processes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"index": index, "name": f"Fake H100 {index}", "mem_total_mb": total_mb, "mem_used_mb": used_mb,
            "util_pct": 0, "processes": processes or []}


def kill_strays(root: Path) -> None:
    """SIGKILL every process a test started under `root`: jobs (their LABDECK_RUN_DIR) and worker
    daemons (their --home), so a failing test leaves nothing running on a shared machine."""
    import psutil

    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            env = p.environ()
            cmd = " ".join(p.cmdline())
        except (psutil.Error, OSError):
            continue
        if env.get("LABDECK_RUN_DIR", "").startswith(str(root)) or (str(root) in cmd and "engine.daemon" in cmd):
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
