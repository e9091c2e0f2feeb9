"""Loading models, tokenizers and records for the engine jobs (generate, score and later finetune).

Why one module: every job must refuse the same bad inputs the same way (a one-line
`JobInputError` that names the path or field, before any expensive work), load weights the same
safe way (safetensors only, `trust_remote_code` only when the spec says so, the resolved revision
recorded), and pick the same dtype (bf16 on a GPU, fp32 on the CPU). practices.md, "Security on a
shared box".

torch and transformers are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.hub import offline_problem
from engine.jobs._common import JobInputError

if TYPE_CHECKING:
    from engine.specs.common import ModelRef

# A hub id is "name" or "owner/name"; anything else that does not exist is a missing local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
LOCAL_RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")


# ----------------------------------------------------------------------------------------------
# Devices and dtypes


def process_state():  # noqa: ANN201 - accelerate.PartialState
    """This process's place in a data-parallel launch (torchrun / accelerate launch), or a single process.

    Without CUDA, accelerate only forms a multi-process group when asked for the CPU explicitly, so a
    CPU launch with several processes still splits the work (how the data-parallel path is tested here).
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def resolve_dtype(requested: str, device: str):  # noqa: ANN201 - torch.dtype
    """'auto' is bf16 on a CUDA device that supports it (fp16 otherwise) and fp32 on the CPU.

    fp32 on the CPU because bf16 matmuls there are slow and lossy on most CPUs; an explicit dtype is
    honoured as given.
    """
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# ----------------------------------------------------------------------------------------------
# Models and tokenizers


def _is_local(path: str) -> bool:
    return os.path.exists(os.path.expanduser(path))


def check_model_path(ref: ModelRef, what: str = "model") -> str:
    """The path to load from; a missing local path is a JobInputError, a hub id is passed through."""
    path = os.path.expanduser(ref.path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise JobInputError(f"{what} {ref.path}: is a file; give the folder written by save_pretrained")
        if not os.path.exists(os.path.join(path, "config.json")) and what != "tokenizer":
            raise JobInputError(f"{what} {ref.path}: no config.json in this folder (not a save_pretrained folder)")
        return path
    if not _HUB_ID.match(ref.path) or ref.path.startswith((".", "~")):
        raise JobInputError(f"{what} {ref.path}: no such folder")
    if why := offline_problem(ref.path, ref.revision):  # offline and not cached: say so before loading anything
        raise JobInputError(f"{what} {ref.path}: {why}")
    return ref.path


def _hub_kwargs(ref: ModelRef) -> dict[str, Any]:
    kw: dict[str, Any] = {"trust_remote_code": bool(ref.trust_remote_code)}
    if ref.revision:
        kw["revision"] = ref.revision
    return kw


def _load_error(ref: ModelRef, what: str, exc: BaseException) -> JobInputError:
    """Turn a from_pretrained failure into one line that says what to do."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "trust_remote_code" in text:
        return JobInputError(f"{what} {ref.path}: needs custom code; set trust_remote_code: true with a pinned revision")
    if "safetensors" in text.lower() or "model.safetensors" in text:
        return JobInputError(f"{what} {ref.path}: no safetensors weights (labdeck loads safetensors only): {first}")
    if not _is_local(ref.path):
        return JobInputError(f"{what} {ref.path}: not a local folder and not loadable from the hub (offline?): {first}")
    return JobInputError(f"{what} {ref.path}: cannot be loaded: {first}")


def load_tokenizer(ref: ModelRef, padding_side: str = "left", what: str = "model"):  # noqa: ANN201
    """The model's tokenizer with a pad token and a pinned padding side.

    A tokenizer without a pad token gets its eos token as pad (the usual convention); callers
    build attention masks themselves, so the pad id never leaks into what is scored.
    """
    from transformers import AutoTokenizer

    path = check_model_path(ref, what)
    try:
        tok = AutoTokenizer.from_pretrained(path, **_hub_kwargs(ref))
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(ref, what, e) from e
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise JobInputError(f"{what} {ref.path}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def _load(auto_cls_name: str, ref: ModelRef, device: str, what: str):  # noqa: ANN202
    import transformers

    path = check_model_path(ref, what)
    dtype = resolve_dtype(ref.dtype, device)
    auto_cls = getattr(transformers, auto_cls_name)
    try:
        model = auto_cls.from_pretrained(path, dtype=dtype, use_safetensors=True, **_hub_kwargs(ref))
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(ref, what, e) from e
    model.to(device)
    model.eval()
    return model


def load_causal_lm(ref: ModelRef, device: str, what: str = "model"):  # noqa: ANN201
    """AutoModelForCausalLM from safetensors, in eval mode on `device`."""
    return _load("AutoModelForCausalLM", ref, device, what)


def load_reward_model(ref: ModelRef, device: str, what: str = "reward model"):  # noqa: ANN201
    """A sequence-classification reward model; anything else is refused before loading its weights."""
    from transformers import AutoConfig

    path = check_model_path(ref, what)
    try:
        config = AutoConfig.from_pretrained(path, **_hub_kwargs(ref))
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(ref, what, e) from e
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") or "Reward" in a for a in archs):
        raise JobInputError(
            f"{what} {ref.path}: is not a sequence classifier (architectures: {', '.join(archs) or 'none'})"
        )
    return _load("AutoModelForSequenceClassification", ref, device, what)


def model_record(ref: ModelRef, model: Any = None, device: str | None = None) -> dict[str, Any]:
    """What to store with every result about the model: path, requested and resolved revision, dtype."""
    out: dict[str, Any] = {"path": ref.path, "revision": ref.revision, "trust_remote_code": ref.trust_remote_code}
    if model is not None:
        commit = getattr(model.config, "_commit_hash", None)
        if commit:
            out["commit"] = commit
        out["dtype"] = str(getattr(model, "dtype", "")).replace("torch.", "")
    if device is not None:
        out["device"] = device
    return out


def require_chat_template(tokenizer: Any, ref: ModelRef, what: str = "model") -> None:
    if getattr(tokenizer, "chat_template", None):
        return
    if what == "model":
        raise JobInputError(
            f"{what} {ref.path}: has no chat template; use template raw, alpaca or struq, or a model that has one"
        )
    raise JobInputError(f"{what} {ref.path}: has no chat template (it scores conversations in its own template)")


# ----------------------------------------------------------------------------------------------
# Records


def _read_file(path: Path, label: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as e:
                            raise JobInputError(f"{label} {path}: line {n} is not JSON ({e})") from e
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = data if isinstance(data, list) else data.get("data") if isinstance(data, dict) else None
            if not isinstance(rows, list):
                raise JobInputError(f"{label} {path}: expected a JSON list of records (or {{'data': [...]}})")
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            raise JobInputError(f"{label} {path}: unknown format {suffix!r}; use .jsonl, .json or .parquet")
    except (OSError, UnicodeDecodeError) as e:
        raise JobInputError(f"{label} {path}: cannot be read: {e}") from e
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise JobInputError(f"{label} {path}: record {i} is a {type(row).__name__}, not an object")
    return rows


def read_records(paths: str | Sequence[str], label: str = "dataset", split: str = "train",
                 config: str | None = None) -> list[dict[str, Any]]:
    """Records from local jsonl/json/parquet files (in order) or one hub dataset id.

    A `datasets.save_to_disk` folder is read with `load_from_disk`. A path that looks like a file
    but does not exist is a JobInputError; anything else that does not exist is tried as a hub id
    through `datasets.load_dataset` (which works offline from the cache).
    """
    items = [paths] if isinstance(paths, str) else list(paths)
    rows: list[dict[str, Any]] = []
    for item in items:
        p = Path(os.path.expanduser(item))
        if p.is_file():
            rows.extend(_read_file(p, label))
        elif p.is_dir():
            rows.extend(_read_datasets(str(p), label, split, config, from_disk=True))
        elif p.suffix.lower() in LOCAL_RECORD_SUFFIXES or item.startswith(("/", ".", "~")) or not _HUB_ID.match(item):
            raise JobInputError(f"{label} {item}: no such file")
        elif why := offline_problem(item, repo_type="dataset"):
            raise JobInputError(f"{label} {item}: {why}")
        else:
            rows.extend(_read_datasets(item, label, split, config, from_disk=False))
    return rows


def _read_datasets(path: str, label: str, split: str, config: str | None, from_disk: bool) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is in the engine extra
        raise JobInputError(f"{label} {path}: reading hub datasets needs the 'datasets' package") from e
    try:
        if from_disk:
            ds = datasets.load_from_disk(path)
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        else:
            ds = datasets.load_dataset(path, config, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "cannot read this"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise JobInputError(f"{label} {path}: cannot be loaded (split {split!r}): {first}") from e
    return [dict(r) for r in ds]


def check_fields(rows: list[dict[str, Any]], fields: dict[str, str | None], label: str, source: str) -> None:
    """Every record has every required field: one line naming the field, the record and what is there.

    `fields` maps the spec option (e.g. 'dataset.instruction_field') to the field it names.
    """
    if not rows:
        raise JobInputError(f"{label} {source}: has no records")
    for option, name in fields.items():
        if name is None:
            continue
        for i, row in enumerate(rows):
            if name not in row:
                have = ", ".join(sorted(map(str, row))[:12]) or "none"
                raise JobInputError(
                    f"{label} {source}: record {i} has no field {name!r} (fields: {have}); set {option}"
                )


def text_field(row: dict[str, Any], name: str | None) -> str:
    """A text field, '' for a missing field or None (e.g. an empty AlpacaFarm input)."""
    if name is None:
        return ""
    v = row.get(name)
    return "" if v is None else str(v)
