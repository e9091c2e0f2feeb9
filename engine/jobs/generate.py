"""The generate job: responses for every record of a dataset (docs/science.md §5, §8.3, §9.5, §10.1).

Pipeline: read and check the records -> build one prompt per record (chat template or a named
format; the attack and the secure front-end filter of §9.1/§9.5 applied to the input first) ->
skip records already written by an earlier attempt -> generate in length-sorted, left-padded
batches -> optionally score every sample with a reward model and pick best/worst-of-N -> append
each batch to the output (fsync'd) -> at the end write `outputs/records.jsonl` in dataset order.

Reproducibility. Greedy output depends only on the prompt (batch size and padding change the
logits only by float rounding; tested equal for batch 1 and 8 on the CPU). Sampled output is
drawn by a per-row sampler: sample j of record K uses its own torch.Generator seeded from
(seed, K, j), and the next token is picked by inverse-CDF from that generator's uniform draw.
So a sample does not depend on which other records share its batch, on the batch size, on
resuming, or on the number of data-parallel processes; only on the model, the prompt and the
sampling parameters (and, at the level of float rounding, on the padding of its batch). The vLLM
backend gives the same guarantee through per-request seeds, with different numbers than HF.

Several GPUs: launched under `accelerate launch` (or torchrun), each process takes a contiguous
share of the pending records (`PartialState.split_between_processes`), writes its own partial
file, and rank 0 merges them in dataset order.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from engine.jobs._batching import Throughput, sorted_batches
from engine.jobs._common import JobContext, JobInputError
from engine.jobs._decoding import HFGenerator, row_seed
from engine.jobs._loading import (
    check_fields,
    check_model_path,
    load_causal_lm,
    load_tokenizer,
    model_record,
    process_state,
    read_records,
    require_chat_template,
    text_field,
)
from engine.jobs._output import INDEX, ResumableRows, fingerprint, write_json
from engine.jobs._prompts import describe, messages_of, render, user_text
from engine.specs.generate import GenerateSpec


@dataclass
class Work:
    """One record to generate for."""

    index: int  # position in the output (dataset order, after skipping input-less records under an attack)
    key: str  # what seeds its samples: the id field, else its position in the dataset
    record: dict[str, Any]
    user: str  # the clean user turn, for the reward model
    messages: list[dict[str, str]] | None
    prompt: str
    ids: list[int]
    truncated: bool
    attack: str = "none"


def load_rows(spec: GenerateSpec) -> tuple[list[dict[str, Any]], list[str]]:
    """Read and check the dataset (no torch needed, so bad input fails in a fraction of a second)."""
    ds = spec.dataset
    label = "dataset"
    rows = read_records(ds.path, label, ds.split, ds.config)
    if ds.limit is not None:
        rows = rows[: ds.limit]
    source = ds.path if isinstance(ds.path, str) else ", ".join(ds.path)
    required = {"dataset.messages_field": ds.messages_field} if ds.messages_field else {
        "dataset.instruction_field": ds.instruction_field}
    if ds.id_field:
        required["dataset.id_field"] = ds.id_field
    if {"completion_real", "completion_realcmb"} & set(spec.attacks()):
        required["dataset.output_field"] = ds.output_field
    check_fields(rows, required, label, source)
    if ds.id_field:
        keys = [str(r[ds.id_field]) for r in rows]
        if len(set(keys)) != len(keys):
            raise JobInputError(f"{label} {source}: field {ds.id_field!r} (dataset.id_field) has duplicate values")
    else:
        keys = [str(i) for i in range(len(rows))]
    return rows, keys


def build_work(spec: GenerateSpec, tokenizer: Any, rows: list[dict[str, Any]], keys: list[str]
               ) -> tuple[list[Work], dict[str, Any]]:
    """Build every prompt (attack and filter applied to the input first); all input errors surface here."""
    ds = spec.dataset
    label = "dataset"
    source = ds.path if isinstance(ds.path, str) else ", ".join(ds.path)
    attacks = spec.attacks()
    prepare = filt = None
    if attacks != ["none"] or spec.defense_filter:
        from engine.data.injection import ATTACKS, prepare_test_data, recursive_filter

        prepare, filt = prepare_test_data, (recursive_filter if spec.defense_filter else None)

    work: list[Work] = []
    skipped = truncated = 0
    for attack in attacks:  # a list of attacks: every attacked record once per attack, the model loaded once
        attack_fn = ATTACKS[attack] if attack != "none" else None
        for row, key in zip(rows, keys, strict=True):
            messages = None
            if ds.messages_field:
                messages = messages_of(row, ds.messages_field)
                instruction = data = ""
                user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            else:
                instruction = text_field(row, ds.instruction_field)
                data = text_field(row, ds.input_field)
                user = user_text(instruction, data, spec.input_join)
            if attack_fn is not None:
                if not data:
                    skipped += 1
                    continue
                # §9.5: punctuation + space, then the attack at the end of the data. A per-record RNG draws the random
                # parts (ignore sentence, completion_realcmb filler), so they do not depend on batching or resume.
                rng = random.Random(row_seed(spec.seed, key, -1))
                data = attack_fn(prepare(data), text_field(row, ds.output_field), rng)
            if filt is not None and data:
                data = filt(data)  # the secure front-end, on the data only (§9.1), after the attack
            prompt = render(spec.template, tokenizer, instruction, data, join=spec.input_join,
                            system=spec.system_prompt, messages=messages)
            ids = tokenizer(prompt.text, add_special_tokens=prompt.add_special_tokens)["input_ids"]
            cut = len(ids) > spec.max_prompt_tokens
            if cut:
                truncated += 1
                ids = ids[-spec.max_prompt_tokens:]
            work.append(Work(len(work), key, row, user, messages, prompt.text, ids, cut, attack))
    skipped //= len(attacks)
    stats = {"records_in_dataset": len(rows), "records": len(work), "skipped_without_input": skipped,
             "truncated_prompts": truncated}
    if not work:
        raise JobInputError(f"{label} {source}: no record has an input to attack" if skipped else
                            f"{label} {source}: has no records")
    return work, stats


def _generator_meta(spec: GenerateSpec, model_info: dict[str, Any]) -> dict[str, Any]:
    meta = {"model": model_info.get("path"), "revision": model_info.get("revision"),
            "commit": model_info.get("commit"), "backend": spec.backend,
            **describe(spec.template, spec.input_join, spec.system_prompt),
            "temperature": spec.temperature, "top_p": spec.top_p, "top_k": spec.top_k,
            "repetition_penalty": spec.repetition_penalty, "presence_penalty": spec.presence_penalty,
            "frequency_penalty": spec.frequency_penalty, "max_new_tokens": spec.max_new_tokens,
            "n": spec.n, "seed": spec.seed}
    if spec.select != "none":
        meta["select"] = spec.select
    if spec.reward_model is not None:
        meta["reward_model"] = spec.reward_model.path
    if spec.attacks() != ["none"]:
        meta["attack"] = spec.attack
    if spec.defense_filter:
        meta["defense_filter"] = True
    if spec.sanitize:
        meta["sanitize"] = "§10.1: \\n\\n -> \\n, :\\n -> :, strip newlines, first line"
    return {k: v for k, v in meta.items() if v is not None}


def _fingerprint_params(spec: GenerateSpec) -> dict[str, Any]:
    d = spec.model_dump(mode="json")
    for k in ("experiment", "name", "description", "gpus", "min_free_mem_gb", "share_gpu_mem_gb", "allow_foreign",
              "priority", "time_limit", "retry", "after", "batch_size", "gpu_memory_utilization"):
        d.pop(k, None)
    return d


def _output_row(spec: GenerateSpec, w: Work, samples: list[tuple[str, int, bool]], rewards: list[float] | None,
                meta: dict[str, Any]) -> dict[str, Any]:
    from engine.metrics import select_best_of_n, select_worst_of_n

    texts = [s[0] for s in samples]
    chosen = 0
    if spec.select == "best":
        chosen = select_best_of_n(rewards)
    elif spec.select == "worst":
        chosen = select_worst_of_n(rewards)
    row = dict(w.record)
    row.update({"prompt": w.prompt, "response": texts[chosen], "response_tokens": samples[chosen][1],
                "finished": samples[chosen][2]})
    if spec.sanitize:  # §10.1: the answer a calibration estimator judges; the raw text stays alongside
        from engine.jobs._uncertainty import sanitize_answer

        row["response_raw"] = texts[chosen]
        row["response"] = sanitize_answer(texts[chosen])
    if spec.n > 1:
        row["responses"] = texts
        row["responses_tokens"] = [s[1] for s in samples]
    if rewards is not None:
        row["rewards"] = rewards
        row["reward"] = rewards[chosen]
    if spec.select != "none":
        row["selected_index"] = chosen
    if w.attack != "none":
        row["attack"] = w.attack
    if w.truncated:
        row["prompt_truncated"] = True
    row["generator"] = meta
    row[INDEX] = w.index
    return row


def run(spec: GenerateSpec, ctx: JobContext) -> None:
    # Cheap checks first: a missing path or field fails before torch is even imported.
    check_model_path(spec.model)
    if spec.reward_model is not None:
        check_model_path(spec.reward_model, "reward model")
    rows, keys = load_rows(spec)

    _quiet()
    state = process_state()
    device = str(state.device)
    main = state.is_main_process

    tokenizer = load_tokenizer(spec.model, "left")
    if spec.template == "chat":
        require_chat_template(tokenizer, spec.model)
    work, stats = build_work(spec, tokenizer, rows, keys)
    out = ResumableRows(ctx.outputs, "records", fingerprint(_fingerprint_params(spec), (w.prompt for w in work)),
                        rank=state.process_index)
    out.check_fingerprint()  # every rank reads the same file, so all raise together (no rank left in a barrier)
    state.wait_for_everyone()
    done = out.done()
    pending = [w for w in work if w.index not in done]
    state.wait_for_everyone()  # all ranks agree on `pending` before any of them writes a row
    if main:
        ctx.events.info("generate: prompts built", **stats, already_done=len(done), pending=len(pending),
                        prompt_format=describe(spec.template, spec.input_join, spec.system_prompt),
                        processes=state.num_processes,
                        reproducibility="per-record seeds: (seed, record key, sample index)")

    if spec.backend == "vllm":
        if state.num_processes > 1:
            raise JobInputError("backend vllm: run it as one process (vLLM spreads over the job's GPUs itself)")
        from engine.jobs._vllm import run_vllm

        run_vllm(spec, ctx, tokenizer, work, pending, out, stats, sys.modules[__name__])
        return

    model = load_causal_lm(spec.model, device)
    info = model_record(spec.model, model, device)
    meta = _generator_meta(spec, info)
    rm = None
    if spec.reward_model is not None:
        from engine.jobs.scorers.reward import RewardModel

        rm = RewardModel(spec.reward_model, device, spec.reward_max_length, max(1, spec.batch_size * spec.n))
    gen = HFGenerator(spec, model, tokenizer, device)
    if main:
        ctx.events.info("generate: model loaded", model=info, stop_token_ids=gen.eos,
                        reward_model=rm.describe() if rm else None)

    throughput, prompts = Throughput(), Throughput()
    with state.split_between_processes(pending) as mine:
        total = len(work)
        n_done = len(done)
        if main:
            ctx.events.progress(n_done, total, "records")
        for batch_idx in sorted_batches([len(w.ids) for w in mine], spec.batch_size):
            items = [mine[i] for i in batch_idx]
            prompts.add_batch([it.ids for it in items])
            throughput.start()
            results = gen.generate(items)
            throughput.stop()
            throughput.real_tokens += sum(s[1] for r in results for s in r)
            rewards_all: list[list[float] | None] = [None] * len(items)
            if rm is not None:
                flat = [rm.encode(it.user, s[0], it.messages) for it, r in zip(items, results, strict=True) for s in r]
                values = rm.score_ids(flat)
                rewards_all = [values[k * spec.n:(k + 1) * spec.n] for k in range(len(items))]
            rows = [_output_row(spec, it, r, rw, meta) for it, r, rw in zip(items, results, rewards_all, strict=True)]
            out.append(rows)
            n_done += len(rows) * (state.num_processes if state.num_processes > 1 else 1)
            if main:
                ctx.events.progress(min(n_done, total), total, "records")
                ctx.events.metric("gen_tokens_per_s", throughput.tokens_per_s, step=min(n_done, total))
    out.close()
    state.wait_for_everyone()
    if main:
        stats["prompt_padding_fraction"] = prompts.padding_fraction
        _finish(spec, ctx, out, len(work), stats, throughput, info, rm)


def _finish(spec: GenerateSpec, ctx: JobContext, out: ResumableRows, total: int, stats: dict[str, Any],
            throughput: Throughput, info: dict[str, Any], rm: Any) -> None:
    import json

    path = out.finalize(total)
    n_tokens = finished = 0
    rewards: list[float] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            n_tokens += r.get("response_tokens", 0)
            finished += bool(r.get("finished"))
            if r.get("reward") is not None:
                rewards.append(r["reward"])
    summary = {"records": total, "mean_response_tokens": n_tokens / total, "finished_fraction": finished / total,
               "truncated_prompts": stats["truncated_prompts"]}
    if throughput.seconds > 0:
        summary["gen_tokens_per_s"] = throughput.tokens_per_s
    if "prompt_padding_fraction" in stats:
        summary["prompt_padding_fraction"] = stats["prompt_padding_fraction"]
    if rewards:
        summary["mean_reward"] = sum(rewards) / len(rewards)
    for k, v in summary.items():
        ctx.events.metric(k, v)
    write_json(ctx.outputs / "generation.json", {
        "model": info, "parameters": _fingerprint_params(spec), "stats": stats, "summary": summary,
        "reward_model": rm.describe() if rm else None, "finished_at": time.time()})
    ctx.events.artifact("records", "outputs/records.jsonl", records=total)


def _quiet() -> None:
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
