"""Writing a file all at once, safely on a shared box: what exports and the app's saves use.

The data goes to a temporary file created beside the target with an unpredictable name and
O_EXCL (`tempfile.mkstemp`), so another user cannot pre-create it or plant a symlink there that
would redirect the write; then `os.replace` puts it in place in one step, so a reader never sees
half a file and a failed write leaves the old one untouched. The file is created 0600 (exports
hold prompts and outputs); a target that is a symlink is replaced by the file, never followed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(target: Path | str, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(fh)` on a fresh temporary file beside `target`, then move it over `target`."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def write_text_atomic(target: Path | str, text: str) -> Path:
    return write_atomic(target, lambda fh: fh.write(text.encode("utf-8")))
