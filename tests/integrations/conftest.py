"""Fixtures for the integrations' tests: a home, a tiny local causal LM built once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for sub in ("worker", "tui"):  # their helpers (ThreadWorker, settle, ...) are plain modules there
    if str(HERE.parent / sub) not in sys.path:
        sys.path.append(str(HERE.parent / sub))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    from db.session import Store

    h = tmp_path / "home"
    Store(h).dispose()
    return h


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.tiny import build_causal_lm

    return build_causal_lm(tmp_path_factory.mktemp("models") / "lm", hidden=32, layers=1)
