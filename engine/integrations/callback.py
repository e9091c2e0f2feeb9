"""`LabdeckCallback`: a transformers Trainer (and so every TRL trainer) reporting to labdeck live.

A `command` job that runs someone's own training script shows nothing in labdeck unless the script
writes events. This callback does it for any `transformers.Trainer`: every logged number becomes a
metric with the trainer's global step (loss, learning_rate, grad_norm, eval_*, and tokens/s when
the trainer counts input tokens), progress is reported in optimizer steps (the store derives the
ETA), each saved checkpoint becomes an artifact, and the end-of-training numbers (train_loss,
train_runtime, the last eval_*) are reported without a step, as the job's summary metrics.

Only the main process reports (`state.is_world_process_zero`), so a DDP/FSDP run of N processes
writes one curve, not N. Outside a labdeck job (no LABDECK_EVENTS in the environment) the callback
does nothing at all, so a script keeps working when run by hand.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from engine.events import ENV_EVENTS, Reporter

# Keys of the trainer's last log that describe the whole run rather than a step.
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss",
                "total_flos", "train_tokens_per_second")
PROGRESS_EVENTS = 200  # at most about this many progress events per run, however long


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if hasattr(v, "item"):  # a 0-d tensor or numpy scalar that slipped into the logs
        try:
            v = v.item()
        except (TypeError, ValueError):
            return None
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    return None


class LabdeckCallback(TrainerCallback):
    """Report a Trainer's logs, progress and checkpoints to the labdeck job it runs in.

    `events`: an events file to write instead of $LABDECK_EVENTS (tests, notebooks). With neither,
    every hook returns at once.
    """

    def __init__(self, events: str | Path | None = None) -> None:
        self._path = events or os.environ.get(ENV_EVENTS)
        self._reporter: Reporter | None = None
        self._tokens: tuple[float, float] | None = None  # (time, num_input_tokens_seen) at the previous log
        self._last_eval: dict[str, float] = {}
        self._last_done: int | None = None

    @property
    def active(self) -> bool:
        return bool(self._path)

    def _out(self, state: Any) -> Reporter | None:
        if not self._path or not state.is_world_process_zero:
            return None
        if self._reporter is None:
            self._reporter = Reporter(self._path)
        return self._reporter

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        out = self._out(state)
        if out is None:
            return
        out.info("training started", integration="transformers", max_steps=state.max_steps,
                 num_train_epochs=args.num_train_epochs, output_dir=str(args.output_dir))
        self._progress(out, state)

    def _progress(self, out: Reporter, state: Any) -> None:
        if state.global_step != self._last_done:
            out.progress(state.global_step, state.max_steps or None, unit="steps")
            self._last_done = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        out = self._out(state)
        if out is None:
            return
        every = max(1, (state.max_steps or 0) // PROGRESS_EVENTS)
        if state.global_step % every == 0 or state.global_step >= state.max_steps:
            self._progress(out, state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        out = self._out(state)
        if out is None or not logs:
            return
        summary = "train_runtime" in logs  # the trainer's closing log: the run's numbers, not a step's
        for name, raw in logs.items():
            value = _number(raw)
            if value is None:
                continue
            if summary and name in SUMMARY_KEYS:
                out.metric(name, value)
            else:
                out.metric(name, value, step=state.global_step)
                if name.startswith("eval_"):
                    self._last_eval[name] = value
        seen = getattr(state, "num_input_tokens_seen", 0) or _number(logs.get("num_tokens")) or 0  # TRL logs num_tokens
        now = time.monotonic()
        if seen and not summary:
            if self._tokens is not None and now > self._tokens[0] and seen > self._tokens[1]:
                out.metric("tokens_per_s", (seen - self._tokens[1]) / (now - self._tokens[0]), step=state.global_step)
            self._tokens = (now, seen)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        out = self._out(state)
        if out is None:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        out.artifact("checkpoint", folder.resolve(), step=state.global_step, epoch=state.epoch)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        out = self._out(state)
        if out is None:
            return
        self._progress(out, state)
        for name, value in self._last_eval.items():
            out.metric(name, value)  # the last evaluation, as a summary the results table pivots on
        out.metric("global_step", state.global_step)
        out.close()
        self._reporter = None


def register_report_to() -> bool:
    """Make `TrainingArguments(report_to=["labdeck"])` add a `LabdeckCallback`.

    transformers resolves `report_to` names through the dict `INTEGRATION_TO_CALLBACK` in
    `transformers.integrations.integration_utils`; it has no public registry, so this adds an entry
    to that dict and returns False if a future transformers moved it (then pass
    `callbacks=[LabdeckCallback()]`, which always works).
    """
    try:
        from transformers.integrations import integration_utils
    except ImportError:
        return False
    table = getattr(integration_utils, "INTEGRATION_TO_CALLBACK", None)
    if not isinstance(table, dict):
        return False
    table["labdeck"] = LabdeckCallback
    return True
