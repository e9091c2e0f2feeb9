"""How a job ended, in words a retry policy and a person can use: pure functions, no I/O but the log tail.

The worker knows up to four things about a finished job: the launcher's `exit.json` (return code,
signal, whether the command started at all), the launcher's own exit status when the worker is its
parent, why the worker itself stopped the job (cancel, time limit, `worker stop --now`), and the last
`error` event the job reported. `classify()` turns them into one terminal status with a reason
from `db.models.FailureReason`, in the spirit of Slurm's COMPLETED / FAILED / TIMEOUT /
OUT_OF_MEMORY / CANCELLED split:

    stopped by the worker for a cancel            -> cancelled   (cancelled)
    stopped by the worker for its time limit      -> failed      (time_limit)
    the gate closed before the command started    -> interrupted (worker_lost)
    the command could not be started              -> failed      (spawn_error)
    exit 0                                        -> succeeded
    CUDA out of memory (exit 4 of an engine job,
      an error event, or the text in the log)     -> failed      (cuda_oom)
    bad input (exit 3 of an engine job, or event) -> failed      (bad_input)
    killed by signal N                            -> failed      (signal; the kernel's OOM killer named)
    any other exit code                           -> failed      (nonzero_exit)
    the launcher is gone and left no record       -> interrupted (worker_lost) if the worker was
                                                     away when it died, else failed (signal)
"""

from __future__ import annotations

import os
import signal as _signal
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.models import FailureReason, JobStatus
from engine import secrets

R = FailureReason
ENGINE_KINDS = ("generate", "score", "finetune", "merge")
EXIT_BAD_INPUT = 3  # engine.jobs._common, repeated here so the worker never imports the job side
EXIT_CUDA_OOM = 4
OOM_MARKERS = ("CUDA out of memory", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError")


@dataclass(frozen=True)
class Outcome:
    status: JobStatus
    reason: str | None
    detail: str
    exit_code: int | None = None
    exit_signal: int | None = None


def signal_name(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def classify(
    *,
    kind: str,
    exit_record: dict[str, Any] | None,
    launcher_returncode: int | None = None,
    stop_reason: str | None = None,
    reported_error: tuple[str, str] | None = None,
    log_tail: str = "",
    died_while_away: bool = False,
) -> Outcome:
    """One terminal status for a job whose processes are gone (see the module docstring)."""
    rec = exit_record or {}
    code = rec.get("returncode")
    sig = rec.get("signal")
    if stop_reason and code == 0 and rec.get("started") is not False and not rec.get("signals_received"):
        # The command had already exited 0 when the stop reached it (a cancel racing a natural end):
        # the job did its work, and says so.
        stop_reason = None
    if stop_reason == "cancel":
        return Outcome(JobStatus.cancelled, R.cancelled.value, "cancelled by request", code, sig)
    if stop_reason == "stop_now":
        return Outcome(JobStatus.cancelled, R.cancelled.value, "the worker was stopped with --now", code, sig)
    if stop_reason == "time_limit":
        return Outcome(JobStatus.failed, R.time_limit.value, "stopped at its time limit", code, sig)
    if exit_record is None:
        if died_while_away or launcher_returncode is None:
            return Outcome(JobStatus.interrupted, R.worker_lost.value,
                           "the job's processes ended while no worker watched them, and left no exit record")
        if launcher_returncode < 0:
            s = -launcher_returncode
            return Outcome(JobStatus.failed, R.signal.value, f"the job's launcher was killed by {signal_name(s)}", None, s)
        return Outcome(JobStatus.failed, R.nonzero_exit.value,
                       f"the job's launcher exited with {launcher_returncode} and left no exit record", launcher_returncode)
    if rec.get("started") is False:
        return Outcome(JobStatus.interrupted, R.worker_lost.value, str(rec.get("detail") or "never started"))
    if rec.get("spawn_error"):
        return Outcome(JobStatus.failed, R.spawn_error.value, str(rec["spawn_error"]), code)
    if code == 0:
        return Outcome(JobStatus.succeeded, None, "", 0)
    if code is None and not sig:
        return Outcome(JobStatus.failed, R.nonzero_exit.value, str(rec.get("detail") or "the exit status was lost"))
    reported_reason, reported_message = reported_error or (None, "")
    engine = kind in ENGINE_KINDS
    if (engine and code == EXIT_CUDA_OOM) or reported_reason == R.cuda_oom.value or any(
        m in log_tail for m in OOM_MARKERS
    ):
        return Outcome(JobStatus.failed, R.cuda_oom.value, reported_message or "CUDA out of memory", code, sig)
    if (engine and code == EXIT_BAD_INPUT) or reported_reason == R.bad_input.value:
        return Outcome(JobStatus.failed, R.bad_input.value, reported_message or "bad input", code, sig)
    if sig:
        detail = f"killed by {signal_name(sig)}"
        if rec.get("oom_killed"):
            detail += ": out of host memory (the kernel's OOM killer)"
        elif sig == _signal.SIGKILL:
            detail += " (from outside labdeck; the kernel's OOM killer does this too)"
        return Outcome(JobStatus.failed, R.signal.value, detail, code, sig)
    detail = f"exit code {code}"
    if reported_message:
        detail += f": {reported_message}"
    return Outcome(JobStatus.failed, R.nonzero_exit.value, detail, code)


def should_retry(outcome: Outcome, retry_on: list[str], retry_max: int, attempt: int) -> bool:
    """A new attempt when the user's policy names this reason and attempts remain.

    `retry_max` counts extra attempts, so attempt 1 with `retry_max=2` may be followed by 2 and 3.
    A cancel is the user's own decision and is never retried.
    """
    if outcome.status not in (JobStatus.failed, JobStatus.interrupted) or outcome.reason is None:
        return False
    return outcome.reason in retry_on and attempt <= retry_max


def read_log_tail(path: Path | str, lines: int = 50, max_bytes: int = 16384) -> str:
    """The last `lines` lines of a log, with progress-bar redraws (`\\r`) reduced to their last state.

    Opened non-blocking and read only if it is a regular file: a job may replace its log with a
    FIFO, which a plain open would wait on forever.

    Secret values of the home holding the run folder (`HOME/runs/<id>/log.txt`) are masked: the tail
    is stored in the database and shown by `show`, the app and notification hooks.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        size = st.st_size
        data = os.pread(fd, max_bytes, max(0, size - max_bytes))
    except OSError:
        return ""
    finally:
        os.close(fd)
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]  # drop the partial first line
    out = []
    for line in text.split("\n"):
        redraws = [seg for seg in line.split("\r") if seg.strip()]
        if redraws:
            out.append(redraws[-1])
    tail = "\n".join(out[-lines:])
    run_dir = Path(path).absolute().parent
    if run_dir.parent.name == "runs" and tail:
        tail = secrets.redact(tail, secrets.values_for_redaction(run_dir.parent.parent))
    return tail
