"""The worker's log: `HOME/worker.log`, rotated by size, with repeated warnings rate-limited.

A worker runs for weeks; a job that writes a bad event line every step, or a GPU driver that fails
every round, would otherwise grow the log without bound. The file rotates at `MAX_BYTES` (two old
files kept), and a warning with the same key is written at most once per `WINDOW_S`, followed by
how many were suppressed.
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from pathlib import Path
from typing import Any

MAX_BYTES = 10 << 20
BACKUPS = 2
WINDOW_S = 60.0
FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup(stream: Any = None, path: Path | None = None, max_bytes: int = MAX_BYTES) -> None:
    """Send labdeck's log to a size-rotated file (`path`) or to a stream."""
    handler: logging.Handler
    if path is not None:
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=BACKUPS,
                                                       encoding="utf-8", errors="backslashreplace")
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger("labdeck")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


class RateLimited:
    """`warn(key, message)`: at most one line per key per window; the next one says how many were held back."""

    def __init__(self, log: logging.Logger, window_s: float = WINDOW_S, max_keys: int = 10_000) -> None:
        self.log = log
        self.window_s = window_s
        self.max_keys = max_keys
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged within the window; True if it was written."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window_s:
            self._last[key] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = (now, 0)
        self.log.warning("%s%s", message, f" ({held} more like this in the last {self.window_s:.0f} s)" if held else "")
        return True
