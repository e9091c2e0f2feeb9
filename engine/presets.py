"""Named starting points for a new job: a kind and the fields that differ from its defaults.

The TUI's New-job form lists these; choosing one fills the form, and the person edits from there.
A preset is plain data (no validation happens here): the form validates the result through the
same spec classes as `labdeck submit`. Recipes for the seed experiments register theirs with
`register()` when they are imported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str
    description: str
    fields: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> dict[str, Any]:
        """The partial spec this preset stands for (a fresh copy, safe to edit)."""
        return {"kind": self.kind, **copy.deepcopy(self.fields)}


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add (or replace) a preset under its name."""
    PRESETS[preset.name] = preset
    return preset


def presets_for(kind: str | None = None) -> list[Preset]:
    return [p for p in PRESETS.values() if kind is None or p.kind == kind]


register(Preset(
    "command: hello",
    "command",
    "A one-second shell-free command: checks that the worker runs jobs.",
    {"experiment": "scratch", "name": "hello", "command": ["python", "-c", "print('hello from labdeck')"]},
))
register(Preset(
    "generate: greedy",
    "generate",
    "Greedy responses for every record of a dataset (the CAR paper's decoding).",
    {"experiment": "scratch", "name": "generate", "model": "Qwen/Qwen2.5-0.5B-Instruct",
     "dataset": "data/prompts.jsonl", "max_new_tokens": 512},
))
register(Preset(
    "finetune: LoRA SFT",
    "finetune",
    "Supervised fine-tuning with LoRA adapters (r 8, alpha 16) on one GPU.",
    {"experiment": "scratch", "name": "sft-lora", "model": "Qwen/Qwen2.5-0.5B", "dataset": "data/train.jsonl",
     "gpus": 1, "lora": {"r": 8, "alpha": 16}, "learning_rate": 2e-4},
))
register(Preset(
    "merge: ExPO",
    "merge",
    "Extrapolate from an SFT checkpoint through an aligned one (alpha 0.3).",
    {"experiment": "scratch", "name": "expo", "method": "expo", "sft": "path/to/sft", "aligned": "path/to/dpo"},
))
