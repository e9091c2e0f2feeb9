"""Loading models, tokenizers and records for every engine job (generate, score, finetune, merge, calibration).

Why one module: every job must judge the same input the same way (`gpt2` is a hub id everywhere;
a folder of a job's outputs is read through its records.jsonl everywhere), refuse bad input with
the same one-line `JobInputError` that names the path or field, before any expensive work, and
load weights the same safe way (safetensors only, `trust_remote_code` only when the spec says so,
the resolved revision recorded). docs/engine-generate-score.md, "Loading".

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
    from engine.specs.common import DatasetRef, ModelRef

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
# Models and tokenizers: one rule for what a model path means, in every job
#
# A path that exists is a local folder written by save_pretrained (config.json, or a peft adapter's
# adapter_config.json). A path that does not exist is a hub id when it looks like one ("gpt2",
# "owner/name"); it is resolved to a local snapshot (downloaded, or the cache when offline) before
# anything is loaded, so a hub model that cannot be had fails in the cheap checks with the same
# line in generate, score, finetune and merge. Anything else is a missing local folder.

_SNAPSHOT_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
_resolved: dict[tuple[str, str | None, bool, bool], str] = {}


def is_hub_id(path: str) -> bool:
    """'name' or 'owner/name' that does not start like a path ('.', '~', '/')."""
    return bool(_HUB_ID.match(path)) and not path.startswith((".", "~"))


def check_model_path(ref: ModelRef, what: str = "model", weights: bool | None = None) -> str:
    """The local folder to load `ref` from, or a one-line JobInputError naming the field and why.

    A local folder must hold config.json (or a peft adapter) and, for a model, .safetensors
    weights; a hub id is resolved through the hub cache (`weights=False` fetches only the
    tokenizer and config files). Resolved paths are remembered for the life of the process.
    """
    if weights is None:
        weights = what != "tokenizer"
    path = os.path.expanduser(ref.path)
    if os.path.exists(path):
        return _check_local(Path(path), ref, what, weights)
    if not is_hub_id(ref.path):
        raise JobInputError(f"{what} {ref.path}: no such folder")
    if why := offline_problem(ref.path, ref.revision):  # offline and not cached: say so before loading anything
        raise JobInputError(f"{what} {ref.path}: {why}")
    key = (ref.path, ref.revision, weights, bool(ref.trust_remote_code))
    if key not in _resolved:
        _resolved[key] = _snapshot(ref, what, weights)
    return _resolved[key]


def _check_local(p: Path, ref: ModelRef, what: str, weights: bool) -> str:
    if not p.is_dir():
        raise JobInputError(f"{what} {ref.path}: is a file; give the folder written by save_pretrained")
    if (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
        return str(p)  # a peft adapter: transformers loads its base through peft
    if not (p / "config.json").is_file() and what != "tokenizer":
        raise JobInputError(f"{what} {ref.path}: no config.json in this folder (not a save_pretrained folder)")
    if weights and not any(p.glob("*.safetensors")):
        raise JobInputError(f"{what} {ref.path}: no .safetensors weights (labdeck loads safetensors only)")
    return str(p)


def _snapshot(ref: ModelRef, what: str, weights: bool) -> str:
    patterns = list(_SNAPSHOT_FILES) + (["*.safetensors"] if weights else []) + (["*.py"] if ref.trust_remote_code else [])
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(ref.path, revision=ref.revision, allow_patterns=patterns)
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, gated, network: all mean "cannot have it"
        raise JobInputError(f"{what} {ref.path}: not a local folder, and the hub cannot provide it "
                            f"({type(e).__name__}; offline?)") from None
    if weights and not any(Path(folder).glob("*.safetensors")):
        raise JobInputError(f"{what} {ref.path}: no .safetensors weights on the hub (labdeck loads safetensors only)")
    return folder


def _hub_kwargs(ref: ModelRef) -> dict[str, Any]:
    return {"trust_remote_code": bool(ref.trust_remote_code)}


def _load_error(ref: ModelRef, what: str, exc: BaseException) -> JobInputError:
    """Turn a from_pretrained failure into one line that says what to do."""
    text = str(exc)
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    if "trust_remote_code" in text:
        return JobInputError(f"{what} {ref.path}: needs custom code; set trust_remote_code: true with a pinned revision")
    if "safetensors" in text.lower():
        return JobInputError(f"{what} {ref.path}: no safetensors weights (labdeck loads safetensors only): {first}")
    return JobInputError(f"{what} {ref.path}: cannot be loaded: {first}")


def load_tokenizer(ref: ModelRef, padding_side: str | None = "left", what: str = "model"):  # noqa: ANN201
    """The model's tokenizer with a pad token and a pinned padding side (None: as saved, for training,
    which pads its own batches and saves the tokenizer with the model).

    A tokenizer without a pad token gets its eos token as pad (the usual convention); callers
    build attention masks themselves, so the pad id never leaks into what is scored.
    """
    from transformers import AutoTokenizer

    path = check_model_path(ref, what, weights=False)
    try:
        tok = AutoTokenizer.from_pretrained(path, **_hub_kwargs(ref))
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(ref, what, e) from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise JobInputError(f"{what} {ref.path}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    if padding_side is not None:
        tok.padding_side = padding_side
    return tok


def _load(auto_cls_name: str, ref: ModelRef, what: str, dtype: Any, attn: str | None = None):  # noqa: ANN202
    import transformers

    path = check_model_path(ref, what)
    auto_cls = getattr(transformers, auto_cls_name)
    kwargs = {"dtype": dtype, "use_safetensors": True, **_hub_kwargs(ref)}
    try:
        if attn is None:
            return auto_cls.from_pretrained(path, **kwargs)
        try:
            return auto_cls.from_pretrained(path, attn_implementation=attn, **kwargs)
        except (ImportError, ValueError) as e:  # an attention kernel this model or box lacks: fall back to SDPA
            if attn == "sdpa" or ("attn" not in str(e).lower() and "attention" not in str(e).lower()):
                raise
            return auto_cls.from_pretrained(path, attn_implementation="sdpa", **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise _load_error(ref, what, e) from None


def load_causal_lm(ref: ModelRef, device: str, what: str = "model"):  # noqa: ANN201
    """AutoModelForCausalLM from safetensors, in eval mode on `device`, in the dtype of `resolve_dtype`."""
    model = _load("AutoModelForCausalLM", ref, what, resolve_dtype(ref.dtype, device))
    model.to(device)
    model.eval()
    return model


def load_trainable_lm(ref: ModelRef, dtype: Any, attn: str, what: str = "model"):  # noqa: ANN201
    """AutoModelForCausalLM for training: the caller's dtype and attention kernel, on the CPU, as from_pretrained returns it."""
    return _load("AutoModelForCausalLM", ref, what, dtype, attn)


def load_reward_model(ref: ModelRef, device: str, what: str = "reward model"):  # noqa: ANN201
    """A sequence-classification reward model; anything else is refused before loading its weights."""
    from transformers import AutoConfig

    path = check_model_path(ref, what)
    try:
        config = AutoConfig.from_pretrained(path, **_hub_kwargs(ref))
    except (OSError, ValueError, KeyError) as e:
        raise _load_error(ref, what, e) from None
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") or "Reward" in a for a in archs):
        raise JobInputError(
            f"{what} {ref.path}: is not a sequence classifier (architectures: {', '.join(archs) or 'none'})"
        )
    model = _load("AutoModelForSequenceClassification", ref, what, resolve_dtype(ref.dtype, device))
    model.to(device)
    model.eval()
    return model


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


OUTPUTS_RECORDS = "records.jsonl"
_SAVED_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


def read_records(paths: str | Sequence[str], label: str = "dataset", split: str = "train",
                 config: str | None = None) -> list[dict[str, Any]]:
    """Records from local files and folders (in order) or one hub dataset id.

    - a .jsonl/.json/.parquet file is read as it is;
    - a folder holding records.jsonl (the outputs folder of a generate or score job, which a
      pipeline stage hands on) is read through that file;
    - another folder must be a `datasets.save_to_disk` folder, read with `load_from_disk`;
    - a path that does not exist is a hub dataset id when it looks like one (through
      `datasets.load_dataset`, which works offline from the cache), else a JobInputError.
    """
    items = [paths] if isinstance(paths, str) else list(paths)
    rows: list[dict[str, Any]] = []
    for item in items:
        p = Path(os.path.expanduser(item))
        if p.is_dir() and (p / OUTPUTS_RECORDS).is_file():
            p = p / OUTPUTS_RECORDS
        if p.is_file():
            rows.extend(_read_file(p, label))
        elif p.is_dir():
            if not any((p / f).is_file() for f in _SAVED_DATASET_FILES):
                raise JobInputError(f"{label} {item}: a folder must hold records.jsonl (a job's outputs) "
                                    "or a dataset written by datasets' save_to_disk")
            rows.extend(_read_datasets(str(p), label, split, config, from_disk=True))
        elif p.suffix.lower() in LOCAL_RECORD_SUFFIXES or item.startswith(("/", ".", "~")) or not _HUB_ID.match(item):
            raise JobInputError(f"{label} {item}: no such file")
        elif why := offline_problem(item, repo_type="dataset"):
            raise JobInputError(f"{label} {item}: {why}")
        else:
            rows.extend(_read_datasets(item, label, split, config, from_disk=False))
    return rows


def read_dataset(ref: DatasetRef, label: str = "dataset") -> list[dict[str, Any]]:
    """A DatasetRef's records (`read_records` on its path, split and config), cut to `ref.limit`."""
    rows = read_records(ref.path, label, ref.split, ref.config)
    if ref.limit is not None:
        rows = rows[: ref.limit]
    if not rows:
        raise JobInputError(f"{label} {source_of(ref.path)}: has no records")
    return rows


def source_of(paths: str | Sequence[str]) -> str:
    """How a path or list of paths is named in an error line."""
    return paths if isinstance(paths, str) else ", ".join(paths)


def _read_datasets(path: str, label: str, split: str, config: str | None, from_disk: bool) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is in the engine extra
        raise JobInputError(f"{label} {path}: reading hub datasets needs the 'datasets' package") from e
    try:
        if from_disk:
            ds = datasets.load_from_disk(path)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise JobInputError(f"{label} {path}: no split {split!r} (splits: {', '.join(ds)})")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(path, config, split=split)
    except JobInputError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "cannot read this"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise JobInputError(f"{label} {path}: cannot be loaded (split {split!r}): {first}") from e
    return [dict(r) for r in ds]


def check_fields(rows: list[dict[str, Any]], fields: dict[str, str | None], label: str, source: str,
                 allow_null: bool = True) -> None:
    """Every record has every required field: one line naming the field, the record and what is there.

    `fields` maps the spec option (e.g. 'dataset.instruction_field') to the field it names; the
    option is named in the error so the user knows what to set. `allow_null=False` counts a field
    holding null as missing (training data, where every mapped field must hold text).
    """
    if not rows:
        raise JobInputError(f"{label} {source}: has no records")
    for option, name in fields.items():
        if name is None:
            continue
        for i, row in enumerate(rows):
            if name not in row or (not allow_null and row[name] is None):
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
