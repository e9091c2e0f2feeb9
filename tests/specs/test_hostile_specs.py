"""Specs that try to reach past labdeck: its own environment variables, unpinned remote code."""

from __future__ import annotations

import pytest

from engine.specfile import SpecError, validate_one


def _command(env: dict) -> dict:
    return {"experiment": "e", "name": "n", "kind": "command", "command": ["true"], "env": env}


@pytest.mark.parametrize("name", ["CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "LABDECK_RUN_DIR", "LABDECK_EVENTS",
                                  "LABDECK_JOB_ID", "LABDECK_NO_GATE"])
def test_env_may_not_override_labdecks_own_variables(name: str) -> None:
    with pytest.raises(SpecError, match=rf"^f: env: .*{name} is set by labdeck") as e:
        validate_one(_command({name: "0"}), "f")
    assert "\n" not in str(e.value)


def test_ordinary_env_is_kept() -> None:
    spec = validate_one(_command({"WANDB_MODE": "offline", "OPENAI_API_KEY": "sk"}), "f")
    assert spec["env"] == {"WANDB_MODE": "offline", "OPENAI_API_KEY": "sk"}


@pytest.mark.parametrize("revision", [None, "main", "v1.0", "abc123", "A" * 40, "g" * 40])
def test_remote_code_needs_a_commit_hash(revision) -> None:
    model = {"path": "org/m", "trust_remote_code": True, **({"revision": revision} if revision else {})}
    with pytest.raises(SpecError, match="trust_remote_code needs a pinned revision: a 40-hex-digit commit hash"):
        validate_one({"experiment": "e", "name": "n", "kind": "generate", "model": model, "dataset": "d"}, "f")


def test_remote_code_with_a_commit_hash_is_accepted() -> None:
    model = {"path": "org/m", "trust_remote_code": True, "revision": "0123456789abcdef0123456789abcdef01234567"}
    spec = validate_one({"experiment": "e", "name": "n", "kind": "generate", "model": model, "dataset": "d"}, "f")
    assert spec["model"]["trust_remote_code"] is True
