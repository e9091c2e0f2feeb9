"""The `merge` job: ExPO extrapolation, LoRA merge, checkpoint averaging (docs/science.md §8).

ExPO and averaging stream tensors through safetensors instead of loading models: the inputs'
headers are read first (names, shapes, dtypes; no weights) and checked, so incompatible
checkpoints are refused with one line before anything is written; then each output shard is
built tensor by tensor from lazily opened input files. Peak memory is about one output shard
plus the tensors of one name, not three 7B models.

Per tensor (every tensor, embeddings, norms and lm_head included, §8.1):

    ExPO:    θ = θ_aligned + α·(θ_aligned − θ_sft)    via engine.metrics.expo, in fp32, cast back
    average: θ = Σ w_i·θ_i / Σ w_i                    in fp32, cast back

and saved in the source dtype (the aligned model's / the first model's) with that model's config
and tokenizer files. `compute_dtype: bfloat16` instead does the ExPO arithmetic in bf16 as the
ExPO repository does (may differ in the last bits; the dtype is recorded in the artifact).

The result is written into a temporary folder beside outputs/model and renamed when complete,
so a killed merge leaves nothing that looks like a model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from engine.jobs._common import JobContext, JobInputError
from engine.jobs._loading import check_model_path
from engine.specs import MergeSpec
from engine.specs.common import ModelRef

INDEX = "model.safetensors.index.json"
_DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")


def run(spec: MergeSpec, ctx: JobContext) -> None:
    out = ctx.run_dir / "outputs" / "model"
    if out.exists():
        raise JobInputError(f"{out} already exists: this run has finished; nothing was overwritten")
    for what, ref in _model_refs(spec):  # every input resolves before torch is imported or anything written
        model_dir(ref, what)
    tmp = out.parent / f".model.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if spec.method == "expo":
            meta = _expo(spec, ctx, tmp)
        elif spec.method == "average":
            meta = _average(spec, ctx, tmp)
        else:
            meta = _lora(spec, ctx, tmp)
        (tmp / "labdeck_merge.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ctx.events.artifact("model", "outputs/model", **meta)


# ------------------------------------------------------------------------------------------- inputs


def _model_refs(spec: MergeSpec) -> list[tuple[str, ModelRef]]:
    """(label, model) for every model input of the method, labelled by its spec field."""
    if spec.method == "expo":
        return [("sft", spec.sft), ("aligned", spec.aligned)]  # type: ignore[list-item]
    if spec.method == "average":
        return [(f"models[{i}]", m) for i, m in enumerate(spec.models)]
    return [("base", spec.base)] if spec.base is not None else []


def model_dir(ref: ModelRef, what: str) -> Path:
    """A local folder for a ModelRef: the folder itself, or the hub snapshot (the rule every job shares)."""
    return Path(check_model_path(ref, what))


class TensorIndex:
    """Names -> (file, shape, dtype) of a safetensors checkpoint, from the headers only."""

    def __init__(self, folder: Path, what: str) -> None:
        from safetensors import safe_open

        self.folder, self.what = folder, what
        index = folder / INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in folder.glob("*.safetensors") if not p.name.startswith("adapter_"))
        if not files:
            raise JobInputError(f"{what} {folder}: no .safetensors weights (only safetensors are merged)")
        self.files = files
        self.entries: dict[str, tuple[str, tuple[int, ...], str]] = {}
        self._open: dict[str, Any] = {}
        for name in files:
            path = folder / name
            if not path.is_file():
                raise JobInputError(f"{what} {folder}: the index names {name}, which is missing")
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    sl = f.get_slice(key)
                    self.entries[key] = (name, tuple(sl.get_shape()), sl.get_dtype())

    def keys_in(self, file: str) -> list[str]:
        return [k for k, (f, _, _) in self.entries.items() if f == file]

    def get(self, key: str) -> Any:
        from safetensors import safe_open

        file = self.entries[key][0]
        if file not in self._open:
            self._open[file] = safe_open(str(self.folder / file), framework="pt")
        return self._open[file].get_tensor(key)

    def close(self) -> None:
        self._open.clear()


def check_compatible(a: TensorIndex, b: TensorIndex) -> None:
    """Same tensor names and shapes, or one line saying what differs (§8.1: the repo asserts this)."""
    ka, kb = set(a.entries), set(b.entries)
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        parts = []
        if only_a:
            parts.append(f"only in {a.what}: {', '.join(only_a[:3])}{' ...' if len(only_a) > 3 else ''} ({len(only_a)})")
        if only_b:
            parts.append(f"only in {b.what}: {', '.join(only_b[:3])}{' ...' if len(only_b) > 3 else ''} ({len(only_b)})")
        raise JobInputError(f"incompatible checkpoints: tensor names differ ({'; '.join(parts)}); nothing was written")
    for k in sorted(ka):
        if a.entries[k][1] != b.entries[k][1]:
            raise JobInputError(f"incompatible checkpoints: {k} is {list(a.entries[k][1])} in {a.what} but "
                                f"{list(b.entries[k][1])} in {b.what}; nothing was written")


def _copy_side_files(src: Path, dst: Path) -> None:
    """Config, generation config, tokenizer, chat template: every non-weight file of the source model."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and not p.name.endswith(_WEIGHT_SUFFIXES) and p.name != INDEX and not p.name.startswith("labdeck_"):
            shutil.copy2(p, dst / p.name)
    if (src / INDEX).is_file():
        shutil.copy2(src / INDEX, dst / INDEX)


def _stream(template: TensorIndex, tmp: Path, combine: Any, events: Any, unit: str) -> int:
    """Write every shard of `template`'s layout with combine(key, template_dtype) -> tensor."""
    from safetensors.torch import save_file

    total = len(template.entries)
    done = 0
    for file in template.files:
        tensors = {}
        for key in template.keys_in(file):
            tensors[key] = combine(key).contiguous()
            done += 1
        save_file(tensors, str(tmp / file), metadata={"format": "pt"})
        del tensors
        events.progress(done, total, unit=unit)
    return total


# --------------------------------------------------------------------------------------------- ExPO


def _expo(spec: MergeSpec, ctx: JobContext, tmp: Path) -> dict[str, Any]:
    import torch

    from engine.metrics import expo

    assert spec.sft is not None and spec.aligned is not None
    sft = TensorIndex(model_dir(spec.sft, "sft"), "sft")
    aligned = TensorIndex(model_dir(spec.aligned, "aligned"), "aligned")
    check_compatible(aligned, sft)
    alpha = spec.alpha
    _copy_side_files(aligned.folder, tmp)

    def combine(key: str) -> Any:
        a, s = aligned.get(key), sft.get(key)
        if not a.is_floating_point():
            return a  # integer buffers are not parameters; keep the aligned model's
        if spec.compute_dtype == "bfloat16":  # the ExPO repository's arithmetic, in bf16 on the loaded weights
            a16 = a.to(torch.bfloat16)
            return (a16 + alpha * (a16 - s.to(torch.bfloat16))).to(a.dtype)
        return expo(s, a, alpha)  # fp32 arithmetic, cast back to the aligned tensor's dtype

    n = _stream(aligned, tmp, combine, ctx.events, "tensors")
    sft.close()
    aligned.close()
    dtypes = sorted({_DTYPE_NAMES.get(d, d) for _, _, d in aligned.entries.values()})
    ctx.events.info(f"ExPO: {n} tensors extrapolated with alpha {alpha} ({spec.compute_dtype} arithmetic, saved as {'/'.join(dtypes)})")
    return {"method": "expo", "alpha": alpha, "sft": spec.sft.path, "aligned": spec.aligned.path,
            "compute_dtype": spec.compute_dtype, "dtype": "/".join(dtypes), "tensors": n}


# ------------------------------------------------------------------------------------------ average


def _average(spec: MergeSpec, ctx: JobContext, tmp: Path) -> dict[str, Any]:
    import torch

    indexes = [TensorIndex(model_dir(m, f"models[{i}]"), f"models[{i}]") for i, m in enumerate(spec.models)]
    for other in indexes[1:]:
        check_compatible(indexes[0], other)
    raw = spec.weights or [1.0] * len(indexes)
    weights = [w / sum(raw) for w in raw]
    _copy_side_files(indexes[0].folder, tmp)
    work = torch.float32 if spec.compute_dtype == "float32" else torch.bfloat16

    def combine(key: str) -> Any:
        first = indexes[0].get(key)
        if not first.is_floating_point():
            return first
        acc = first.to(work) * weights[0]
        for w, idx in zip(weights[1:], indexes[1:], strict=True):
            acc += idx.get(key).to(work) * w
        return acc.to(first.dtype)

    n = _stream(indexes[0], tmp, combine, ctx.events, "tensors")
    for idx in indexes:
        idx.close()
    return {"method": "average", "models": [m.path for m in spec.models], "weights": weights,
            "compute_dtype": spec.compute_dtype, "tensors": n}


# --------------------------------------------------------------------------------------------- LoRA


def _lora(spec: MergeSpec, ctx: JobContext, tmp: Path) -> dict[str, Any]:
    """Fold an adapter into its base with peft's merge_and_unload, then save the plain model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    assert spec.adapter is not None
    adapter = Path(spec.adapter).expanduser()
    cfg_file = adapter / "adapter_config.json"
    if not cfg_file.is_file():
        raise JobInputError(f"adapter {spec.adapter}: no adapter_config.json (not a peft adapter folder)")
    if not (adapter / "adapter_model.safetensors").is_file():
        raise JobInputError(f"adapter {spec.adapter}: no adapter_model.safetensors")
    base_ref = spec.base
    if base_ref is None:
        recorded = json.loads(cfg_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not recorded:
            raise JobInputError(f"adapter {spec.adapter}: it records no base model; set base")
        base_ref = ModelRef(path=recorded)
    base_dir = model_dir(base_ref, "base")
    TensorIndex(base_dir, "base")  # refuses a base without safetensors before loading anything
    work = torch.float32 if spec.compute_dtype == "float32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=work, use_safetensors=True,
                                                 trust_remote_code=base_ref.trust_remote_code, revision=None)
    src_dtype = _config_dtype(base_dir) or work
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter))
    except (ValueError, RuntimeError, KeyError) as e:
        raise JobInputError(f"adapter {spec.adapter}: does not fit base {base_ref.path} ({str(e).splitlines()[0][:160]})") from None
    merged = peft_model.merge_and_unload()
    merged.to(src_dtype).save_pretrained(tmp, safe_serialization=True)
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else base_dir
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(tmp)
    return {"method": "lora", "adapter": str(adapter), "base": base_ref.path, "compute_dtype": spec.compute_dtype,
            "dtype": str(src_dtype).removeprefix("torch.")}


def _config_dtype(folder: Path) -> Any:
    import torch

    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = cfg.get("dtype") or cfg.get("torch_dtype")
    return getattr(torch, name, None) if isinstance(name, str) else None
