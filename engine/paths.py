"""Safe paths for artifact and output names: a name can never escape its folder.

`os.path.join(root, "/etc/passwd")` drops the root; `root / "../x"` climbs out of it. Job outputs
and artifact names come from specs that other people may have written, so every such name goes
through `safe_join`.
"""

from __future__ import annotations

from pathlib import Path


class UnsafePath(ValueError):
    """An artifact or output name that would leave its folder."""


def safe_join(root: Path | str, name: str) -> Path:
    """`root/name`, refusing absolute names, `..`, NUL bytes, backslashes and anything that resolves outside."""
    if not isinstance(name, str) or not name or name.strip() != name:
        raise UnsafePath(f"{name!r}: an output name must be a non-empty relative path without surrounding spaces")
    if "\x00" in name or "\\" in name:
        raise UnsafePath(f"{name!r}: NUL bytes and backslashes are not allowed in output names")
    if name.startswith(("/", "~")) or any(part in ("..", "") for part in name.split("/")):
        raise UnsafePath(f"{name!r}: must be relative, without '..' or empty parts")
    base = Path(root).resolve()
    target = (base / name).resolve()
    if not target.is_relative_to(base) or target == base:
        raise UnsafePath(f"{name!r}: resolves outside {base}")
    return target
