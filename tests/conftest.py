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
    if not os.path.exists("/dev/nvidiactl") and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return False  # no NVIDIA driver here: no need to import torch (seconds) to know
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
    """In CI (CI=true), a skipped test fails unless it is marked `gpu`: a missing tool or package
    there is a broken CI machine, not a reason to pass quietly. xfail stays xfail."""
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and _ci() and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (only tests marked gpu may skip there): {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("gpu" in item.keywords for item in items) and not _has_cuda():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh labdeck home with its (empty) store, also set as LABDECK_HOME for code and child
    processes that read the environment. The one home fixture of the suite."""
    from db.session import Store

    h = tmp_path / "home"
    monkeypatch.setenv("LABDECK_HOME", str(h))
    Store(h).dispose()
    return h


@pytest.fixture
def store(home: Path):  # noqa: ANN201
    """The store of `home`, disposed after the test."""
    from db.session import Store

    s = Store(home)
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
