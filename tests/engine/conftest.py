"""Fixtures for the engine job tests: small datasets and broken model folders built from the `tiny` models."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import write_jsonl  # noqa: E402

WORDS = "the quick brown fox jumps over the lazy dog while a language model predicts the next token".split()


def instruction_rows(n: int, with_input_every: int = 2) -> list[dict]:
    """Instructions of widely varying length, half of them with an input, each with a reference output."""
    rows = []
    for i in range(n):
        k = 2 + (i * 7) % 23
        rows.append({
            "id": f"r{i}",
            "instruction": f"Task {i}: " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(k)) + ".",
            "input": ("The cat sat on the mat " * (1 + i % 3)).strip() if i % with_input_every else "",
            "output": f" Reference answer {i}.",
        })
    return rows


@pytest.fixture(scope="session")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "prompts.jsonl", instruction_rows(12))


@pytest.fixture(scope="session")
def no_template_model(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    """The tiny Llama without a chat template."""
    dst = tmp_path_factory.mktemp("broken") / "llama-no-template"
    shutil.copytree(tiny.llama, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    return dst
