"""API keys for jobs: `$LABDECK_HOME/secrets.env`, read by the worker each time it starts a job.

Why a file in the home and not the worker's environment: the worker is started once (often by the
first `labdeck submit`) and lives for days; a key exported in a shell afterwards never reached its
jobs. The worker reads this file for every job it starts, so `labdeck secrets set OPENAI_API_KEY`
reaches the next job without a restart.

The file is `KEY=VALUE` lines (blank lines and `#` comments allowed, an optional `export ` prefix,
one pair of surrounding quotes stripped). It must be a regular file owned by the user and readable
by nobody else (0600); otherwise it is refused with one line, as ssh refuses a private key that
others can read. Values go into the job's environment only: the launcher leaves their names out of
`env.json`, and `redact` masks them in what labdeck stores from a job's log (the log tail shown by
`labdeck show` and the app, and sent to notification hooks).

Standard library only: the worker, the CLI and the launcher import it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

SECRETS_FILE = "secrets.env"
# The names (never the values) of the secrets a job received, so the launcher can leave them out of env.json.
ENV_SECRET_NAMES = "LABDECK_SECRET_NAMES"
MIN_REDACT_LEN = 4  # shorter values would mask ordinary words; nobody's API key is that short
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretsError(ValueError):
    """The secrets file cannot be used (permissions, owner, a malformed line); one line saying why."""


def secrets_path(home: Path | str) -> Path:
    return Path(home) / SECRETS_FILE


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise SecretsError(f"{key!r}: a secret's name is letters, digits and _, not starting with a digit")
    if key.startswith("LABDECK_"):
        raise SecretsError(f"{key}: LABDECK_ variables are set by the worker, not by secrets")
    return key


def parse(text: str, source: str = SECRETS_FILE) -> dict[str, str]:
    """KEY=VALUE lines -> dict; a malformed line is a SecretsError naming the line (never its value)."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not _KEY.match(key):
            raise SecretsError(f"{source} line {n}: expected KEY=VALUE (KEY: letters, digits, _)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def _open_private(path: Path) -> int | None:
    """An fd on the secrets file after the owner and mode checks; None when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SecretsError(f"{path}: cannot be read ({e.strerror or e}); it must be a plain file, not a link") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif st.st_uid != os.getuid():
        problem = f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"is readable or writable by others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
    if problem:
        os.close(fd)
        raise SecretsError(f"{path}: {problem}; refused")
    return fd


def load(home: Path | str) -> dict[str, str]:
    """The home's secrets ({} without a file); SecretsError if the file is not private or malformed."""
    path = secrets_path(home)
    fd = _open_private(path)
    if fd is None:
        return {}
    with os.fdopen(fd, encoding="utf-8") as fh:
        try:
            text = fh.read()
        except UnicodeDecodeError:
            raise SecretsError(f"{path}: not UTF-8 text") from None
    return parse(text, str(path))


def names(home: Path | str) -> list[str]:
    return sorted(load(home))


def _write_private(path: Path, text: str) -> None:
    """Write `text` as a new 0600 file next to `path` and rename it over: never half-written, never readable by others."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def _lines_without(path: Path, key: str) -> list[str]:
    """The file's lines (comments kept) minus the ones that set `key`; checks the file first."""
    load(path.parent)  # refuses a file others can read, or a malformed one, before touching it
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    kept = []
    for line in lines:
        s = line.strip()
        if s.startswith("export "):
            s = s[len("export "):].lstrip()
        if s.partition("=")[0].strip() != key or s.startswith("#"):
            kept.append(line)
    return kept


def set_secret(home: Path | str, key: str, value: str) -> bool:
    """Add or replace KEY; True when it replaced an earlier value. The file is (re)written 0600."""
    check_key(key)
    if "\n" in value or "\r" in value or "\x00" in value:
        raise SecretsError(f"{key}: the value must be one line")
    value = value.strip()
    if not value:
        raise SecretsError(f"{key}: the value is empty")
    path = secrets_path(home)
    had = key in load(home)
    lines = _lines_without(path, key)
    if not lines:
        lines = ["# labdeck secrets: KEY=VALUE lines, read for every job the worker starts. Keep this file 0600."]
    lines.append(f"{key}={value}")
    _write_private(path, "\n".join(lines) + "\n")
    return had


def unset_secret(home: Path | str, key: str) -> bool:
    """Remove KEY; False when it was not set."""
    check_key(key)
    path = secrets_path(home)
    if key not in load(home):
        return False
    _write_private(path, "\n".join(_lines_without(path, key)) + "\n")
    return True


def job_environment(home: Path | str) -> dict[str, str]:
    """What the worker adds to a job's environment: the secrets and, in LABDECK_SECRET_NAMES, their names.

    Read afresh for every job, so a key set after the worker started reaches the next job. LABDECK_
    names are dropped (the worker's own variables always win). SecretsError when the file is refused.
    """
    values = {k: v for k, v in load(home).items() if not k.startswith("LABDECK_")}
    if values:
        values[ENV_SECRET_NAMES] = ",".join(sorted(values))
    return values


def values_for_redaction(home: Path | str) -> list[str]:
    """The secret values to mask in what labdeck stores or sends, even from a file refused for its mode
    (masking is always safe); [] when there is nothing readable."""
    try:
        text = secrets_path(home).read_text(encoding="utf-8")
        return list(parse(text).values())
    except (OSError, UnicodeDecodeError, SecretsError):
        return []


def redact(text: str, values: dict[str, str] | list[str]) -> str:
    """`text` with every secret value of MIN_REDACT_LEN characters or more replaced by `***`."""
    vals = values.values() if isinstance(values, dict) else values
    for v in sorted((v for v in vals if len(v) >= MIN_REDACT_LEN), key=len, reverse=True):
        text = text.replace(v, "***")
    return text
