"""`python -m engine.launcher RUN_DIR`: the small parent every job runs under.

Why a launcher between the worker and the job: jobs outlive the worker (as Slurm jobs outlive a
restarted controller), so when the worker comes back it must learn how a job ended while nobody
watched. The launcher waits for the real command and writes `exit.json` (return code, signal,
times, peak memory) atomically into the run folder; the restarted worker reads it.

The start gate: the worker spawns the launcher with a pipe on stdin and writes `go` only after the
launcher's pid and start time are committed to the database. If the worker dies before that, the
launcher reads end-of-file, writes `exit.json` with `"started": false` and exits without running
anything. So no job can run without the database knowing its process, and a restarted worker
never has to guess.

What it runs:

* engine kinds (generate, score, finetune, merge): `python -m engine.jobs RUN_DIR`;
* `command`: the user's argument list, in `cwd` (default the run folder), with the spec's `env`;
* several GPUs with an engine kind, or a command with `multi_gpu: accelerate`: the same through
  `python -m accelerate.commands.launch --multi_gpu --num_processes N` (one process per GPU), on a
  free rendezvous port so two such jobs on one box do not collide. For a command, `command` then
  names the script and its arguments (a leading `python` is dropped, `-m pkg` is kept).

Standard library only (plus nothing): the launcher must start fast and never load torch itself.
It records `env.json` (python, platform, package versions read by `importlib.metadata`, git commits,
CUDA_VISIBLE_DEVICES, host) after the command has started, so that costs no start-up latency; the
variables named in LABDECK_SECRET_NAMES (from the home's secrets.env) are never recorded.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.secrets import ENV_SECRET_NAMES

EXIT_FILE = "exit.json"
ENV_FILE = "env.json"
LOG_FILE = "log.txt"
SPEC_FILE = "spec.json"
CHECKPOINT_NOW_FILE = "checkpoint-now"  # Slurm's time limit is near: save a checkpoint now
ENGINE_KINDS = ("generate", "score", "finetune", "merge")
EXIT_NOT_STARTED = 125  # the gate closed before `go`: nothing ran
EXIT_SPAWN_ERROR = 127  # the command could not be started (not found, not executable)
MIRROR_CONFIG = "mirror.json"  # in the home: mirror each job's metrics to a tracker (engine/integrations/mirror.py)

# Package versions worth recording for a fine-tuning or evaluation run.
PACKAGES = (
    "labdeck", "torch", "transformers", "accelerate", "peft", "datasets", "tokenizers", "safetensors",
    "trl", "vllm", "flash-attn", "liger-kernel", "bitsandbytes", "deepspeed", "numpy", "nvidia-ml-py",
    "sqlmodel", "textual",
)


EXIT_RECORD_BYTES = 4096  # exit.json's fixed size, reserved on disk before the job runs


def _write_all(fd: int, data: bytes, offset: int = 0) -> None:
    """pwrite until everything is written: one write may be short (a full disk, a signal)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(f"short write ({n})")
        view, offset = view[n:], offset + n


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """tmp + fsync + rename: a reader sees the old file or the whole new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class ExitRecord:
    """`exit.json`, written so that a full disk cannot turn a finished job into a lost one.

    The file's blocks are reserved when the launcher starts (before the job can fill the disk):
    a fixed-size temporary file, allocated with `posix_fallocate`. At the end the record is
    written into those blocks (padded with spaces, which JSON ignores), fsynced and renamed into
    place; none of that needs a new block. The record is kept small (the command line is in
    env.json) and cut to the essential fields should it ever not fit.
    """

    ESSENTIAL = ("started", "returncode", "signal", "ended_at", "spawn_error", "detail", "oom_killed",
                 "signals_received", "launcher_pid")

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / EXIT_FILE
        self.tmp = run_dir / f".{EXIT_FILE}.{os.getpid()}.reserved"
        self.fd: int | None = None
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, EXIT_RECORD_BYTES)
        except (OSError, AttributeError):
            try:  # a filesystem without fallocate: write the padding instead
                _write_all(fd, b" " * EXIT_RECORD_BYTES)
            except OSError:
                pass
        self.fd = fd

    def write(self, data: dict[str, Any]) -> None:
        body = json.dumps(data, sort_keys=True, default=str).encode()
        if len(body) >= EXIT_RECORD_BYTES:
            body = json.dumps({k: data[k] for k in self.ESSENTIAL if k in data}, default=str).encode()[
                : EXIT_RECORD_BYTES - 1]
        if self.fd is None:
            write_json_atomic(self.path, json.loads(body))
            return
        try:
            _write_all(self.fd, body + b"\n" + b" " * (EXIT_RECORD_BYTES - len(body) - 1))
            os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = None
        os.replace(self.tmp, self.path)


def _open_regular(path: Path) -> int | None:
    """Open for reading without ever blocking (a FIFO planted in a run folder), regular files only."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def read_exit(run_dir: Path | str) -> dict[str, Any] | None:
    """The launcher's record of how the job ended, or None if it wrote none (or not a readable one)."""
    fd = _open_regular(Path(run_dir) / EXIT_FILE)
    if fd is None:
        return None
    try:
        data = json.loads(os.pread(fd, 1 << 20, 0).decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if isinstance(data, dict) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _visible_gpus(env: dict[str, str]) -> int:
    v = env.get("CUDA_VISIBLE_DEVICES", "")
    return len([x for x in v.split(",") if x.strip()])


def _accelerate(n: int) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
        "--num_machines", "1", "--main_process_port", str(_free_port()),
    ]


def _srun(env: dict[str, str], cmd: list[str]) -> list[str]:
    """Under Slurm with several tasks: `srun` starts one rank per task on every node (see
    engine.executors.slurm_task); the rendezvous port is a free one on this (the first) node."""
    env.setdefault("LABDECK_MASTER_PORT", str(_free_port()))
    return ["srun", "--kill-on-bad-exit=1", f"--ntasks={env['LABDECK_SLURM_TASKS']}",
            sys.executable, "-m", "engine.executors.slurm_task", *cmd]


def build_argv(spec: dict[str, Any], run_dir: Path, env: dict[str, str]) -> tuple[list[str], Path]:
    """The command line and working directory for this job."""
    kind = spec.get("kind")
    if int(env.get("LABDECK_SLURM_TASKS", "0") or 0) > 1:  # a distributed launch through srun
        if kind in ENGINE_KINDS:
            return _srun(env, [sys.executable, "-m", "engine.jobs", str(run_dir)]), run_dir
        cmd = [str(a) for a in spec["command"]]
        return _srun(env, cmd), Path(spec["cwd"]).expanduser() if spec.get("cwd") else run_dir
    n = _visible_gpus(env)
    if kind in ENGINE_KINDS:
        if n > 1:
            return [*_accelerate(n), "-m", "engine.jobs", str(run_dir)], run_dir
        return [sys.executable, "-m", "engine.jobs", str(run_dir)], run_dir
    if kind == "command":
        cmd = [str(a) for a in spec["command"]]
        cwd = Path(spec["cwd"]).expanduser() if spec.get("cwd") else run_dir
        if spec.get("multi_gpu") == "accelerate" and n > 1:
            if Path(cmd[0]).name.startswith("python"):
                cmd = cmd[1:]
            return [*_accelerate(n), *cmd], cwd
        return cmd, cwd
    raise ValueError(f"kind {kind!r}: the launcher knows engine kinds and command")


def _git_commit(path: Path) -> dict[str, Any] | None:
    """HEAD and whether the tree is dirty, for the repository holding `path` (None if none).

    `--no-optional-locks`: a plain `git status` refreshes the index under `index.lock`; a job
    killed at that moment (cancel, kill -9) would leave a stale lock in the user's repository and
    break their next commit, and a running one would race with their own git commands.
    """
    git = ["git", "--no-optional-locks", "-C", str(path)]
    try:
        head = subprocess.run(  # noqa: S603, S607 - argument list
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(  # noqa: S603, S607
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()), "path": str(path)}
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment_record(argv: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """What `env.json` holds: enough to tell later which code and which packages produced a result."""
    labdeck_src = Path(__file__).resolve().parent.parent
    secret_names = set(env.get(ENV_SECRET_NAMES, "").split(","))  # from secrets.env: never recorded
    return {
        "hostname": socket.gethostname(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": _versions(),
        "labdeck_git": _git_commit(labdeck_src),
        "cwd_git": _git_commit(cwd) if cwd.is_dir() else None,
        "argv": argv,
        "cwd": str(cwd),
        "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES"),
        "env": {k: v for k, v in env.items() if k.startswith(("LABDECK_", "CUDA_", "PYTORCH_", "NCCL_", "HF_", "OMP_NUM_THREADS", "MKL_NUM_THREADS"))
                and "TOKEN" not in k and k not in secret_names},
    }


def _start_mirror(run_dir: Path, env: dict[str, str]) -> None:
    """`python -m engine.integrations.mirror RUN_DIR` in a session of its own, so a slow tracker never holds up
    the job, the launcher or the worker (nothing here imports it). A failure to start is logged, never fatal."""
    try:
        with open(run_dir / "mirror.log", "ab") as log:
            subprocess.Popen([sys.executable, "-m", "engine.integrations.mirror", str(run_dir)],  # noqa: S603
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(run_dir),
                             start_new_session=True)
    except OSError as e:
        print(f"labdeck: mirror not started: {e}", file=sys.stderr, flush=True)


def _own_cgroup() -> Path | None:
    """This process's own cgroup v2 folder, or None at the root (bare metal) or without cgroup v2."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hier, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hier == "0" and controllers == "" and path.strip() not in ("", "/"):
                return Path("/sys/fs/cgroup") / path.strip().lstrip("/")
    except OSError:
        pass
    return None


def _oom_kills(cgroup: Path | None = None) -> int | None:
    """The OOM-kill counter of the job's own cgroup (v2), to tell the kernel's OOM killer from other
    SIGKILLs; None when the job has no cgroup of its own (the root's counter would count the box)."""
    cgroup = cgroup if cgroup is not None else _own_cgroup()
    if cgroup is None:
        return None
    try:
        for line in (cgroup / "memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return None


def _wait_for_gate() -> bool:
    """Block until the worker says `go` on stdin; False on end-of-file (the worker died first)."""
    try:
        line = sys.stdin.buffer.readline()
    except OSError:
        return False
    finally:
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)  # the job gets /dev/null as stdin, not the gate pipe
            os.close(devnull)
        except OSError:
            pass
    return line.strip() == b"go"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m engine.launcher RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0]).absolute()
    # An ignored SIGCHLD (inherited from whoever started the worker) makes the kernel reap the
    # job at once, and wait4 could not learn how it ended: a failed job would look like exit 0.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    exit_record = ExitRecord(run_dir)
    t0 = time.time()
    base = {"launcher_pid": os.getpid(), "launcher_started_at": t0}
    # A SIGTERM for the job (cancel, time limit) reaches the whole session; the launcher must live
    # on to record how the command ended, so it only passes the signal on to the command.
    child: subprocess.Popen[bytes] | None = None
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        # os.kill, not child.poll()/send_signal: polling here could reap the child behind the
        # wait4 below and lose its status. Until wait4 returns the pid cannot be reused.
        if child is not None:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    for forwarded in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(forwarded, forward)

    def warn_limit(_signum: int, _frame: object) -> None:
        # Slurm's warning before the time limit (sbatch --signal=B:USR1@N). Not passed on: a job
        # that does not handle SIGUSR1 would die of it. The flag file tells a training loop to
        # save a checkpoint now.
        try:
            (run_dir / CHECKPOINT_NOW_FILE).touch()
        except OSError:
            pass

    signal.signal(signal.SIGUSR1, warn_limit)

    if os.environ.get("LABDECK_NO_GATE") != "1" and not _wait_for_gate():
        exit_record.write({**base, "started": False, "ended_at": time.time(),
                                                "returncode": None, "signal": None,
                                                "detail": "the worker went away before the job was started"})
        return EXIT_NOT_STARTED
    if received:  # cancelled between spawn and go
        exit_record.write({**base, "started": False, "ended_at": time.time(),
                                                "returncode": None, "signal": received[0],
                                                "detail": f"signal {received[0]} before the job started"})
        return EXIT_NOT_STARTED

    env = dict(os.environ)
    try:
        spec = json.loads((run_dir / SPEC_FILE).read_text(encoding="utf-8"))
        if spec.get("kind") == "command":
            env.update({str(k): str(v) for k, v in (spec.get("env") or {}).items()})
        cmd, cwd = build_argv(spec, run_dir, env)
        cgroup = _own_cgroup()
        oom_before = _oom_kills(cgroup)
        started_at = time.time()
        child = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL)  # noqa: S603
    except (OSError, ValueError, KeyError) as e:
        message = f"could not start the job: {type(e).__name__}: {e}"
        print(f"labdeck: {message}", file=sys.stderr, flush=True)
        exit_record.write({**base, "started": True, "spawn_error": message,
                                                "ended_at": time.time(), "returncode": EXIT_SPAWN_ERROR,
                                                "signal": None})
        return EXIT_SPAWN_ERROR
    if received:
        forward(received[0], None)
    try:
        write_json_atomic(run_dir / ENV_FILE, environment_record(cmd, cwd, env))
    except Exception as e:  # noqa: BLE001 - a record that could not be written never stops the job
        print(f"labdeck: env.json not written: {e}", file=sys.stderr, flush=True)
    if (run_dir.parent.parent / MIRROR_CONFIG).exists():  # the home mirrors jobs to a tracker (off by default)
        _start_mirror(run_dir, env)

    status: int | None = None
    rusage = None
    while True:
        try:
            _, status, rusage = os.wait4(child.pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:  # reaped behind our back: how it ended is unknown, never "exit 0"
            break
    received_before_end = list(received)  # a signal after this came too late to have ended the job
    returncode = os.waitstatus_to_exitcode(status) if status is not None else None
    child.returncode = returncode
    sig = -returncode if returncode is not None and returncode < 0 else None
    oom_after = _oom_kills(cgroup)
    record: dict[str, Any] = {
        **base,
        "started": True,
        "child_pid": child.pid,
        "started_at": started_at,
        "ended_at": time.time(),
        "returncode": returncode,
        "signal": sig,
        "signals_received": received_before_end,
        "max_rss_mb": round(rusage.ru_maxrss / 1024, 1) if rusage else None,
        "cpu_user_s": round(rusage.ru_utime, 3) if rusage else None,
        "cpu_sys_s": round(rusage.ru_stime, 3) if rusage else None,
        "oom_killed": bool(sig == signal.SIGKILL and oom_before is not None and oom_after is not None
                           and oom_after > oom_before),
    }
    if returncode is None:
        record["detail"] = "the job's exit status was lost (something else reaped it)"
    exit_record.write(record)
    if returncode is None:
        return 1
    return returncode if returncode >= 0 else 128 + (sig or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
