"""Hugging Face hub conventions: what a spec names on the hub, fetching it ahead, and the offline check.

Why: compute nodes often have no internet. The user runs `labdeck prefetch SPEC` where there is
internet (a login node sharing `HF_HOME`), which downloads every model and dataset the expanded jobs
name into the hub cache; jobs on the compute node then run with `HF_HUB_OFFLINE=1`. A job whose
model is not in the cache there must fail before loading anything, with one line naming the model,
not after minutes of imports with a stack of connection errors (`offline_problem`, called by the
engine's loaders).

The usual variables are respected as huggingface_hub reads them: `HF_HOME` / `HF_HUB_CACHE` (where
the cache is), `HF_HUB_OFFLINE` (no network), `HF_TOKEN` (gated models; `labdeck secrets set
HF_TOKEN` puts it in every job's environment, and prefetch reads it from there too). The worker
passes its environment, these included, to every job.

No torch here; huggingface_hub is imported only inside the functions that need it (`labdeck
prefetch` and the check), so the CLI stays light.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A hub id is "name" or "owner/name" (the engine's loaders use the same rule).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
_TRUE = {"1", "on", "yes", "true"}
_RECORD_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
# labdeck loads safetensors only: other weight formats in a model repo are gigabytes nobody reads.
MODEL_IGNORE = ["*.bin", "*.pth", "*.pt", "*.h5", "*.msgpack", "*.ot", "*.onnx", "*.gguf", "*.tflite", "*.mlmodel"]


def is_offline(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where huggingface_hub keeps its cache under `env` (read now, not when the library was imported)."""
    env = os.environ if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def is_hub_id(path: str) -> bool:
    return bool(HUB_ID.match(path)) and not os.path.exists(os.path.expanduser(path))


def offline_problem(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str | None:
    """Why `repo_id` cannot be loaded here, or None: only offline, only for a hub id missing from the cache.

    The check asks huggingface_hub's own cache lookup (`snapshot_download(local_files_only=True)`),
    so it agrees with what `from_pretrained` and `load_dataset` will find.
    """
    if not is_offline() or not is_hub_id(repo_id):
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - the engine extra installs it
        return None
    cache = cache_dir()
    try:
        snapshot_download(repo_id, repo_type=repo_type, revision=revision, cache_dir=str(cache),
                          local_files_only=True)
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError and its kin all mean "not here"
        at = f" at revision {revision}" if revision else ""
        return (f"not in the Hugging Face cache ({cache}){at}, and HF_HUB_OFFLINE is set; "
                f"run `labdeck prefetch` on a machine with internet that shares HF_HOME")
    return None


# ----------------------------------------------------------------------------------------------
# What a spec names


@dataclass
class HubItem:
    """One repository to fetch, with the jobs that need it."""

    repo_type: str  # "model" | "dataset"
    repo_id: str
    revision: str | None = None
    jobs: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass
class Listing:
    hub: list[HubItem]
    local: list[tuple[str, str]]  # (model|dataset, path) that exist here
    missing: list[tuple[str, str, str]]  # (model|dataset, path, job) local paths that do not exist
    upstream: int  # references to an earlier stage's outputs: made by the pipeline, nothing to fetch


def _refs(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every ModelRef and DatasetRef inside a validated spec, however deeply nested (scorers, merges)."""
    from pydantic import BaseModel

    from engine.specs.common import DatasetRef, ModelRef

    if isinstance(obj, ModelRef):
        yield "model", obj
    elif isinstance(obj, DatasetRef):
        yield "dataset", obj
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from _refs(getattr(obj, name))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _refs(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _refs(v)


def list_refs(specs: Iterable[dict[str, Any]]) -> Listing:
    """Sort what the expanded jobs name into hub repositories, local paths, missing paths and stage outputs."""
    from engine.specs import parse_spec

    hub: dict[tuple[str, str, str | None], HubItem] = {}
    local: dict[tuple[str, str], None] = {}
    missing: dict[tuple[str, str], str] = {}
    upstream = 0
    for spec in specs:
        job = str(spec.get("name", "?"))
        for what, ref in _refs(parse_spec(spec)):
            paths = ref.path if isinstance(ref.path, list) else [ref.path]
            revision = getattr(ref, "revision", None)
            for p in paths:
                if "${@" in p:
                    upstream += 1
                elif os.path.exists(os.path.expanduser(p)):
                    local[(what, p)] = None
                elif (HUB_ID.match(p) and not p.startswith((".", "~"))
                      and not (what == "dataset" and p.lower().endswith(_RECORD_SUFFIXES))):
                    item = hub.setdefault((what, p, revision), HubItem(what, p, revision))
                    if job not in item.jobs:
                        item.jobs.append(job)
                else:
                    missing.setdefault((what, p), job)
    return Listing(list(hub.values()), list(local), [(w, p, j) for (w, p), j in missing.items()], upstream)


def download(item: HubItem, token: str | None) -> str:
    """Fetch one repository into the cache (huggingface_hub's progress bars on stderr); its local folder.

    Models skip weight formats labdeck never loads (`MODEL_IGNORE`); datasets come whole.
    """
    from huggingface_hub import snapshot_download

    return snapshot_download(
        item.repo_id, repo_type=item.repo_type, revision=item.revision, cache_dir=str(cache_dir()),
        token=token or None, ignore_patterns=MODEL_IGNORE if item.repo_type == "model" else None,
    )


def describe_error(item: HubItem, exc: BaseException) -> str:
    """One line for a failed download: offline, unknown, gated or a network error."""
    name = type(exc).__name__
    if is_offline():
        why = f"not in the Hugging Face cache ({cache_dir()}) and HF_HUB_OFFLINE is set, so it cannot be downloaded"
    elif name == "GatedRepoError":
        why = "gated: accept its licence on the hub and set HF_TOKEN (labdeck secrets set HF_TOKEN)"
    elif name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        why = f"no such {item.repo_type} on the hub (or it is private: set HF_TOKEN)"
    else:
        first = (str(exc).strip().splitlines() or [name])[0][:200]
        why = f"{name}: {first}"
    return f"{item.repo_type} {item.label}: {why}"
