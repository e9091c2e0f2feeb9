"""Shared fixtures: a private labdeck home per test, and tiny local models built once per session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _has_cuda():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty labdeck home, also set as LABDECK_HOME for code that reads the environment."""
    h = tmp_path / "home"
    monkeypatch.setenv("LABDECK_HOME", str(h))
    return h


@pytest.fixture
def store(home: Path):  # noqa: ANN201
    from db.session import open_store

    s = open_store(home)
    yield s
    s.dispose()


@dataclass(frozen=True)
class TinyModels:
    tokenizer: Path
    llama: Path  # a causal LM (Llama architecture)
    qwen2: Path  # a causal LM (Qwen2 architecture), another seed
    reward: Path  # a sequence-classification reward model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Random-init models and a freshly trained tokenizer, saved with save_pretrained (a few seconds)."""
    from engine.tiny import build_causal_lm, build_reward_model, build_tokenizer

    root = tmp_path_factory.mktemp("tiny")
    build_tokenizer(root / "tokenizer")
    return TinyModels(
        tokenizer=root / "tokenizer",
        llama=build_causal_lm(root / "llama", root / "tokenizer", arch="llama", seed=1),
        qwen2=build_causal_lm(root / "qwen2", root / "tokenizer", arch="qwen2", seed=2),
        reward=build_reward_model(root / "reward", root / "tokenizer", seed=3),
    )
