"""Fixtures for the engine job tests: small datasets and broken model folders built from the `tiny` models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from job_harness import instruction_rows, write_jsonl


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
