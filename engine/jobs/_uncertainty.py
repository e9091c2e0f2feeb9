"""What calibration training and uncertainty scoring share (Kapoor et al. 2024; docs/science.md §10).

One place for the strings and conventions that must agree between the job that *trains* an
uncertainty estimator (`engine.jobs.calibration`) and the scorers that *use* one or label the
answers (`ConfidenceScorer`, `CorrectnessScorer` in `engine.jobs.scorers`), and the generate
job's answer sanitisation:

- `sanitize_answer` (§10.1) and the uncertainty query `query_text` (§10.2);
- `choice_token_ids`: the ids of "i" and "ii" read as `tokenizer(s).input_ids[-1]` (§10.2);
- `parse_label`: a 0/1 correctness label from a record;
- the estimator's pieces: the MLP head (§10.3), last-token features and the {i, ii} logits of
  right-padded batches, and `Estimator`, which loads a finetune job's calibration output folder
  (probe, lora or lora_prompt) and turns (question, answer) pairs into 2-way logits;
- `uncertainty_metrics`: ECE (on the temperature-scaled confidence, as the paper plots it), AUROC
  (raw; TS cannot change it), acc and unc_acc, from `engine.metrics` (AUROC is scikit-learn's
  `roc_auc_score`; the ECE is the official binary two-sided one, which scikit-learn lacks).

Torch is imported inside functions only: the generate job and the specs' checks import this
module before (or without) loading the ML stack.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.jobs._common import JobInputError
from engine.jobs._train_model import logits_to_keep

QUERY_SUFFIX = "\n\nIs the proposed answer correct?\nChoices:\n(i): no\n(ii): yes\nAnswer:"
HEAD_TEXT = "Linear(d,256)-ReLU-Linear(256,128)-ReLU-Linear(128,64)-ReLU-Linear(64,2)"
FEATURE_TEXT = "hidden_states[-1] at the last token of '{question} {answer}'"
ESTIMATOR_INFO = "calibration.json"
HEAD_FILE = "calibration_head.safetensors"


def sanitize_answer(p: str) -> str:
    """§10.1: '\\n\\n' -> '\\n', ':\\n' -> ':', leading/trailing newlines stripped, first line kept."""
    p = p.replace("\n\n", "\n").replace(":\n", ":").strip("\n")
    return p.split("\n")[0]


def qa_text(question: str, answer: str) -> str:
    """The text whose last-token feature the probe reads: '{c} {p}' (§10.3)."""
    return f"{question} {answer}"


def query_text(question: str, answer: str) -> str:
    """§10.2: '{c} {p}\\n\\nIs the proposed answer correct?\\nChoices:\\n(i): no\\n(ii): yes\\nAnswer:'."""
    return f"{question} {answer}{QUERY_SUFFIX}"


def choice_token_ids(tokenizer: Any, where: str = "model") -> tuple[int, int]:
    """Ids of 'i' and 'ii' as the official code takes them: tokenizer(s).input_ids[-1] (§10.2).

    Each must be one vocabulary item (SentencePiece's '▁i' / '▁ii'), and they must differ.
    """
    ids = []
    for s in ("i", "ii"):
        if len(tokenizer(s, add_special_tokens=False)["input_ids"]) != 1:
            raise JobInputError(f"{where}: {s!r} is not a single token for this tokenizer; the uncertainty query needs one")
        ids.append(tokenizer(s)["input_ids"][-1])
    if ids[0] == ids[1]:
        raise JobInputError(f"{where}: 'i' and 'ii' map to the same token")
    return ids[0], ids[1]


def parse_label(v: Any, i: int, field: str, where: str = "dataset") -> int:
    """A correctness label: 0/1, true/false, or their text forms; anything else is one clear error."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)) and v in (0, 1):
        return int(v)
    if isinstance(v, str) and v.strip().lower() in ("0", "1", "true", "false", "yes", "no"):
        return int(v.strip().lower() in ("1", "true", "yes"))
    raise JobInputError(f"{where}: record {i} has {field}={v!r}; a correctness label must be 0/1 or true/false")


# ------------------------------------------------------------------------------ model pieces


def build_head(d: int) -> Any:
    """§10.3: Linear(d,256)-ReLU-Linear(256,128)-ReLU-Linear(128,64)-ReLU-Linear(64,2), Xavier-normal, bias on."""
    import torch

    head = torch.nn.Sequential(
        torch.nn.Linear(d, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2),
    )
    for m in head:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_normal_(m.weight)
            torch.nn.init.zeros_(m.bias)
    return head


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-padded ids, attention mask and each row's last real position.

    Reading the last real token of a right-padded row gives the same logits as the official left
    padding with per-row position ids (float rounding aside).
    """
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids, mask, mask.sum(1) - 1


def _keep(input_ids: Any, last: Any) -> Any:
    import torch

    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    keep[torch.arange(input_ids.shape[0]), last] = True
    return keep


def last_hidden(model: Any, input_ids: Any, attention_mask: Any, last: Any) -> Any:
    """hidden_states[-1] at each row's last real token (the probe's feature, §10.3)."""
    import torch

    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False,
                logits_to_keep=logits_to_keep(_keep(input_ids, last)))
    return out.hidden_states[-1][torch.arange(input_ids.shape[0]), last]


def choice_logits(model: Any, input_ids: Any, attention_mask: Any, last: Any, ids: Sequence[int]) -> Any:
    """The next-token logits of ('i', 'ii') after each row's last real token (the query's answer, §10.2)."""
    keep = _keep(input_ids, last)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=logits_to_keep(keep))
    logits = out.logits if out.logits.dim() == 2 else out.logits[keep]
    return logits[:, list(ids)].float()


# ------------------------------------------------------------------------------ a trained estimator


def read_estimator_info(path: str | Path, where: str = "estimator") -> dict[str, Any]:
    """The finetune job's `calibration.json` (style, base model, temperature, token ids), checked."""
    p = Path(path)
    info_path = p / ESTIMATOR_INFO
    if not p.is_dir():
        raise JobInputError(f"{where}: {path} is not a folder (give a calibration finetune job's outputs/model)")
    if not info_path.is_file():
        raise JobInputError(f"{where}: {path} has no {ESTIMATOR_INFO}; is it a finetune job with method calibration?")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise JobInputError(f"{where}: {info_path}: cannot read it ({e})") from None
    style = info.get("style")
    if style not in ("probe", "lora", "lora_prompt"):
        raise JobInputError(f"{where}: {info_path}: style {style!r} is not probe, lora or lora_prompt")
    if style != "lora_prompt" and not (p / HEAD_FILE).is_file():
        raise JobInputError(f"{where}: {path} has no {HEAD_FILE} for its {style} head")
    if style != "probe" and not (p / "adapter_config.json").is_file():
        raise JobInputError(f"{where}: {path} has no adapter_config.json for its {style} adapters")
    if not isinstance(info.get("base_model"), str):
        raise JobInputError(f"{where}: {info_path}: no base_model recorded")
    t = info.get("temperature", 1.0)
    if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise JobInputError(f"{where}: {info_path}: temperature {t!r} is not a positive number")
    return info


class Estimator:
    """A trained uncertainty estimator: (question, answer) pairs in, 2-way logits [incorrect, correct] out.

    - probe: the frozen base model's last-token feature of '{c} {p}', then the MLP head;
    - lora: the same through the adapted model;
    - lora_prompt: the {i, ii} logits after the uncertainty query under the adapted model.
    Tokenisation is the training job's: the text with the tokenizer's special tokens; '{c} {p}'
    keeps its first `max_length` tokens, the query its last (so the question's end survives).
    """

    def __init__(self, path: str | Path, base: Any, device: str, where: str = "estimator") -> None:
        import torch
        from transformers import AutoTokenizer

        from engine.jobs._loading import load_causal_lm

        self.torch = torch
        self.path = Path(path)
        self.info = read_estimator_info(path, where)
        self.style = self.info["style"]
        self.temperature = float(self.info.get("temperature", 1.0))
        self.device = device
        try:
            self.tok = AutoTokenizer.from_pretrained(self.path)
        except (OSError, ValueError) as e:
            raise JobInputError(f"{where}: {path}: cannot load its tokenizer ({str(e).splitlines()[0][:160]})") from None
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.base_path = base.path
        model = load_causal_lm(base, device)
        if self.style != "probe":
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, str(self.path), is_trainable=False)
            except (OSError, ValueError, RuntimeError) as e:
                raise JobInputError(f"{where}: {path}: cannot apply its adapters to {base.path} ({str(e).splitlines()[0][:160]})") from None
        self.model = model.to(device).eval()
        self.head = None
        if self.style != "lora_prompt":
            from safetensors.torch import load_file

            d = int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size") else self.model.config.get_text_config().hidden_size)
            head = build_head(d)
            try:
                head.load_state_dict(load_file(str(self.path / HEAD_FILE)))
            except RuntimeError as e:
                raise JobInputError(f"{where}: {path}: its head does not fit {base.path} (hidden size {d}): {str(e).splitlines()[0][:120]}") from None
            self.head = head.to(device).eval()
        self.ids = choice_token_ids(self.tok, where) if self.style == "lora_prompt" else None
        if self.ids is not None and self.info.get("choice_token_ids") not in (None, list(self.ids)):
            raise JobInputError(f"{where}: {path}: token ids of 'i'/'ii' {list(self.ids)} differ from the trained "
                                f"{self.info['choice_token_ids']}; a different tokenizer?")

    def encode(self, question: str, answer: str, max_length: int) -> tuple[list[int], bool]:
        """Token ids of what the estimator reads, and whether they were cut."""
        if self.style == "lora_prompt":
            ids = self.tok(query_text(question, answer))["input_ids"]
            return ids[-max_length:], len(ids) > max_length
        ids = self.tok(qa_text(question, answer))["input_ids"]
        return ids[:max_length], len(ids) > max_length

    def logits(self, seqs: Sequence[Sequence[int]]) -> Any:
        """2-way logits (N x 2, float32 on the CPU) of a batch of encoded sequences."""
        torch = self.torch
        ids, mask, last = pad_right(seqs, self.tok.pad_token_id)
        ids, mask, last = ids.to(self.device), mask.to(self.device), last.to(self.device)
        with torch.inference_mode():
            if self.style == "lora_prompt":
                z = choice_logits(self.model, ids, mask, last, self.ids)
            else:
                z = self.head(last_hidden(self.model, ids, mask, last).float())
        return z.float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "style": self.style, "base_model": self.base_path,
                "trained_base_model": self.info.get("base_model"), "temperature": self.temperature,
                "feature": FEATURE_TEXT if self.style != "lora_prompt" else None,
                "head": HEAD_TEXT if self.style != "lora_prompt" else None,
                "query_suffix": QUERY_SUFFIX if self.style == "lora_prompt" else None,
                "choice_token_ids": list(self.ids) if self.ids else None, "steps": self.info.get("steps"),
                "validation": self.info.get("validation")}


# ------------------------------------------------------------------------------ metrics


def uncertainty_metrics(p: Sequence[float], y: Sequence[int], p_ts: Sequence[float] | None = None,
                        drop_conf_one: bool = True) -> dict[str, float]:
    """The §10.4 numbers of one group of answers, as the paper reports them.

    - `ece`: two-sided binary ECE (10 bins, official conf == 1.0 quirk per `drop_conf_one`) of the
      temperature-scaled P(correct) when `p_ts` is given (the paper plots ECE of the -TS
      estimators), else of `p`; `ece_raw` is always of `p`; `ece_corrected` keeps conf == 1.0;
      `ece_one_sided` is the reliability ECE of P(correct) against y (a different number);
    - `auroc`: of `p` against y (TS is monotone and cannot change it); NaN with one class;
    - `acc` = mean(y), the answers' accuracy; `unc_acc` = mean(hit), the estimator's own accuracy.
    """
    from engine.metrics import calibration_summary, ece

    q = list(p if p_ts is None else p_ts)
    summ = calibration_summary(p, y)
    return {
        "ece": ece(q, y, mode="two_sided", drop_conf_one=drop_conf_one),
        "ece_raw": ece(p, y, mode="two_sided", drop_conf_one=drop_conf_one),
        "ece_corrected": ece(q, y, mode="two_sided", drop_conf_one=False),
        "ece_one_sided": ece(q, y, mode="one_sided"),
        "auroc": summ["auroc"],
        "acc": summ["acc"],
        "unc_acc": calibration_summary(q, y)["unc_acc"],
    }
