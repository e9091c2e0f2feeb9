"""The user's saved specs: YAML files under `HOME/specs/`, written from the composer, listed in `n`.

No Textual here. A saved spec is an ordinary spec file (`labdeck submit ~/.labdeck/specs/x.yaml`
queues it); the composer writes it 0600 through `db.files` (an unpredictable temporary name, then
rename), and the name the person types is checked so that it can only name a file in that folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SPECS = "specs"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,-]{0,99}$")
SUFFIXES = (".yaml", ".yml", ".json")


class SpecNameError(ValueError):
    """A name that is not a plain file name in the specs folder."""


@dataclass(frozen=True)
class SavedSpec:
    name: str
    path: Path
    description: str


def spec_name(name: str) -> str:
    """The file stem for `name` (a trailing .yaml is allowed); raises SpecNameError saying why not."""
    stem = name.strip()
    for suffix in SUFFIXES:
        stem = stem.removesuffix(suffix)
    if not NAME_RE.fullmatch(stem) or ".." in stem:
        raise SpecNameError(f"{name!r}: a saved spec's name is letters, digits and . _ - + = , "
                            "(at most 100, no '/', not starting with a symbol)")
    return stem


def specs_dir(home: Path) -> Path:
    return Path(home) / SPECS


def save_spec(home: Path, name: str, text: str) -> Path:
    """Write `text` as HOME/specs/NAME.yaml (0600, all at once); the path. Raises SpecNameError or OSError."""
    from db.files import write_text_atomic

    stem = spec_name(name)
    folder = specs_dir(home)
    if folder.is_symlink():
        raise SpecNameError(f"{folder}: is a symbolic link; the specs folder must be a real folder")
    folder.mkdir(mode=0o700, exist_ok=True)
    target = folder / f"{stem}.yaml"
    if target.is_dir():
        raise SpecNameError(f"{target}: is a folder")
    return write_text_atomic(target, text)


def exists(home: Path, name: str) -> bool:
    """Whether a saved spec of that name is there already (so the composer asks before replacing it)."""
    try:
        return (specs_dir(home) / f"{spec_name(name)}.yaml").is_file()
    except SpecNameError:
        return False


def tilde(path: Path) -> str:
    """`~/...` for a path under the user's home folder (short enough for a help line)."""
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


def _describe(path: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        return f"(unreadable: {type(e).__name__})"
    if not isinstance(data, dict):
        return "(not a spec: no mapping)"
    text = str(data.get("description") or "").strip()
    if text:
        return text.splitlines()[0]
    kind = data.get("kind") or ("pipeline" if "stages" in data else "")
    return " · ".join(str(x) for x in (kind, data.get("name") or "", data.get("experiment") or "") if x)


def list_specs(home: Path) -> list[SavedSpec]:
    """Every spec file in HOME/specs, by name, with the first line of its description."""
    folder = specs_dir(home)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix in SUFFIXES and path.is_file() and not path.name.startswith("."):
            out.append(SavedSpec(path.stem, path, _describe(path)))
    return out
