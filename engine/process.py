"""Job processes: start each in its own session, know it again after a restart, and kill all of it.

Three habits from Slurm and pueue, kept in one small module:

* A job starts with `start_new_session=True`, so its launcher is the leader of a new session and
  process group (sid == pgid == launcher pid). The worker, the terminal that started it and the
  SSH connection can all go away without a SIGHUP reaching the job, and everything the job forks
  stays findable by its session id.
* A process is identified by its pid, its start time in clock ticks after boot (`/proc/PID/stat`
  field 22) and the boot id. After a reboot or a long worker outage the pid of a finished launcher
  may belong to something else; comparing the start keeps a restarted worker from adopting (or
  killing) a stranger. Boot-relative ticks never move when the wall clock is stepped (NTP, a VM
  resumed), where psutil's `create_time()` (boot time + ticks, in wall-clock seconds) does.
* Stopping a job means SIGTERM to every process of its session, a grace period, SIGKILL to whatever
  is left, and a check that nothing survived. A child that traps SIGTERM, changes its process
  group or sits in a subprocess of a subprocess is still in the session and still dies.

Argument lists only: nothing here goes through a shell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

# Identities stored before labdeck kept start ticks hold psutil's create_time(); two readings of
# it agree exactly, the tolerance only absorbs float rounding after a round trip through SQLite.
START_TIME_TOLERANCE_S = 0.05
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def boot_id() -> str:
    """This boot's random id: a start tick from another boot names another process."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def boot_seconds() -> float:
    """Seconds since boot, counting suspend: the clock start ticks are measured in."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


@dataclass(frozen=True)
class ProcessIdentity:
    """A pid with its boot-relative start and the boot: what a restarted worker recognises a job by."""

    pid: int
    start_ticks: int
    boot: str

    @property
    def start_time(self) -> float:
        """The start as a number (boot-relative ticks), for the store's float columns."""
        return float(self.start_ticks)

    @property
    def started_boot_s(self) -> float:
        return self.start_ticks / CLOCK_TICKS

    def token(self) -> str:
        return f"{self.pid}:{self.start_ticks}:{self.boot}"

    @classmethod
    def parse(cls, token: str) -> ProcessIdentity | None:
        """An identity from `token()`; None for anything else (an empty or older token)."""
        parts = token.split(":")
        if len(parts) != 3:
            return None
        try:
            return cls(int(parts[0]), int(parts[1]), parts[2])
        except ValueError:
            return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) from /proc/PID/stat; the name field may hold spaces and parens."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            raw = fh.read()
    except (OSError, ValueError):
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def identity(pid: int) -> ProcessIdentity | None:
    """The identity of a living process, or None if there is no such (non-zombie) process."""
    st = _stat(pid) if pid and pid > 0 else None
    if st is None or st[0] in ("Z", "X"):
        return None
    return ProcessIdentity(pid, st[1], boot_id())


def is_alive(pid: int | None, start: ProcessIdentity | float | None) -> bool:
    """True if `pid` runs and is the process `start` names: a reused pid is not our process.

    `start` is an identity (pid, start ticks, boot) or, for rows written before labdeck kept
    ticks, psutil's create_time(). A zombie counts as dead: it has exited, it is only waiting for
    its parent (or an init that does not reap) to collect it.
    """
    if not pid or start is None:
        return False
    ident = identity(pid)
    if ident is None:
        return False
    if isinstance(start, ProcessIdentity):
        return ident == start
    try:
        return abs(psutil.Process(pid).create_time() - float(start)) <= START_TIME_TOLERANCE_S
    except psutil.Error:
        return False


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    env: Mapping[str, str],
    stdout: int | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start `argv` as the leader of a new session (never through a shell).

    Only the descriptors given here are inherited (close_fds): in particular a job never holds the
    worker's lock file, so a dead worker's lock is free even while its jobs run on.
    """
    return subprocess.Popen(  # noqa: S603 - an argument list, no shell
        list(argv),
        cwd=str(cwd),
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        start_new_session=True,
        close_fds=True,
    )


def session_members(sid: int) -> list[int]:
    """Pids of the living (non-zombie) processes in session `sid` or process group `sid`.

    The session catches children that moved to a process group of their own; the group catches
    nothing more in practice but costs nothing to ask. Zombies are left out: they are already dead.
    """
    members = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) != sid and os.getpgid(pid) != sid:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        members.append(pid)
    return members


def processes_with_env(key: str, value: str, exclude: Iterable[int] = ()) -> list[int]:
    """Pids of this user's processes whose environment holds `key=value`.

    Used only when stopping a job, to catch a process that left the job's session with `setsid`
    (it keeps the LABDECK_RUN_DIR it inherited). Costs one read of /proc/PID/environ per process.
    """
    skip = set(exclude)
    uid = os.getuid()
    found = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.pid in skip or p.info["uids"] is None or p.info["uids"].real != uid:
                continue
            if p.environ().get(key) == value and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return found


def leftovers(sid: int, run_dir: str) -> list[int]:
    """Living members of session `sid` that carry the job's LABDECK_RUN_DIR.

    Used once a job's launcher is gone: its pid (the session id) may in principle have been
    reused, so a member counts as the job's only if its environment says so. A stranger that
    happens to lead a session with the same id is never touched.
    """
    found = []
    for pid in session_members(sid):
        try:
            if psutil.Process(pid).environ().get("LABDECK_RUN_DIR") == run_dir:
                found.append(pid)
        except (psutil.Error, OSError):
            continue
    return found


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def signal_session(sid: int, sig: int, extra: Iterable[int] = ()) -> list[int]:
    """Send `sig` to the process group `sid` and to every member of session `sid`; returns them."""
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    members = session_members(sid) + list(extra)
    signal_pids(members, sig)
    return members


def kill_session(sid: int, grace_s: float = 10.0, extra: Iterable[int] = (), poll_s: float = 0.05) -> list[int]:
    """SIGTERM the whole session, wait up to `grace_s`, SIGKILL the rest; return the survivors.

    Blocking: the worker uses its non-blocking `JobStopper` for jobs; this is for cleanup of
    leftovers and for tests. An empty list means nothing of the session is left.
    """
    extra = list(extra)
    signal_session(sid, signal.SIGTERM, extra)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _living(sid, extra):
            return []
        time.sleep(poll_s)
    signal_session(sid, signal.SIGKILL, extra)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        left = _living(sid, extra)
        if not left:
            return []
        time.sleep(poll_s)
    return _living(sid, extra)


def kill_pids(pids: Iterable[int], grace_s: float = 2.0, poll_s: float = 0.05) -> list[int]:
    """SIGTERM these processes, SIGKILL what is left after `grace_s`; returns the survivors."""
    idents = [i for i in (identity(p) for p in pids) if i is not None]

    def left() -> list[ProcessIdentity]:
        return [i for i in idents if is_alive(i.pid, i)]

    signal_pids([i.pid for i in idents], signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while left() and time.monotonic() < deadline:
        time.sleep(poll_s)
    signal_pids([i.pid for i in left()], signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while left() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return [i.pid for i in left()]


def _living(sid: int, extra: Iterable[int]) -> list[int]:
    left = set(session_members(sid))
    for pid in extra:
        if identity(pid) is not None:
            left.add(pid)
    return sorted(left)


class JobStopper:
    """A non-blocking SIGTERM -> grace -> SIGKILL sequence for one job's session.

    The worker calls `step()` every tick; it never sleeps, so stopping one stubborn job does not
    delay the others. `done` is True once no member of the session is alive.
    """

    def __init__(self, sid: int, grace_s: float, run_dir: str | None = None, now: float | None = None) -> None:
        self.sid = sid
        self.grace_s = grace_s
        self.run_dir = run_dir
        self.started = time.monotonic() if now is None else now
        self.killed = False
        self.done = False
        self.survivors: list[int] = []
        self._escaped = processes_with_env("LABDECK_RUN_DIR", run_dir) if run_dir else []
        signal_session(sid, signal.SIGTERM, self._escaped)

    def step(self, now: float | None = None) -> bool:
        """Advance the sequence; True once everything is gone (or SIGKILL could not finish it)."""
        if self.done:
            return True
        now = time.monotonic() if now is None else now
        left = _living(self.sid, self._escaped)
        if not left:
            self.done = True
            return True
        if not self.killed and now - self.started >= self.grace_s:
            signal_session(self.sid, signal.SIGKILL, left)
            self.killed = True
            self._killed_at = now
        elif self.killed:
            signal_pids(left, signal.SIGKILL)
            if now - self._killed_at > 10.0:  # a process in uninterruptible sleep: give up, report it
                self.survivors = left
                self.done = True
                return True
        return False
