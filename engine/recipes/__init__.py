"""The recipes shipped with labdeck: the seed experiments as pipeline files, found by name.

A recipe is a YAML pipeline in this folder; its header comment says what it reproduces and its
`variants:` hold scaled-down runs (`tiny`: local tiny models, a few records) that the test suite
runs end to end. Torch-free: the CLI lists and resolves recipes without loading the ML stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    description: str
    variants: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "description": self.description, "variants": self.variants}


def recipe_path(name: str) -> Path | None:
    """The shipped recipe called `name` (with or without .yaml), or None."""
    stem = name.removesuffix(".yaml")
    if "/" in stem or stem.startswith("."):
        return None
    path = RECIPES_DIR / f"{stem}.yaml"
    return path if path.is_file() else None


def list_recipes() -> list[Recipe]:
    from engine.specfile import load_file

    out = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        data = load_file(path)
        variants = data.get("variants") or {}
        out.append(Recipe(
            name=path.stem, path=path, description=str(data.get("description", "")),
            variants={k: str(v.get("description", "")) for k, v in variants.items() if isinstance(v, dict)},
        ))
    return out
