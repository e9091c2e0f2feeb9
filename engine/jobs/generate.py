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

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

from engine.jobs._batching import Throughput, pad, sorted_batches
from engine.jobs._common import JobContext, JobInputError
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


def row_seed(seed: int, key: str, sample: int) -> int:
    """A 63-bit seed for sample `sample` of record `key`: stable across runs, machines and Python hash seeds."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


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
    if spec.attack in ("completion_real", "completion_realcmb"):
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
    attack_fn = prepare = filt = None
    if spec.attack != "none" or spec.defense_filter:
        from engine.data.injection import ATTACKS, prepare_test_data, recursive_filter

        attack_fn = ATTACKS[spec.attack] if spec.attack != "none" else None
        prepare, filt = prepare_test_data, (recursive_filter if spec.defense_filter else None)

    work: list[Work] = []
    skipped = truncated = 0
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
            # §9.5: punctuation + space, then the attack at the end of the data. A per-record RNG draws the
            # random parts (ignore sentence, completion_realcmb filler), so they do not depend on batching or resume.
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
        work.append(Work(len(work), key, row, user, messages, prompt.text, ids, cut))
    stats = {"records_in_dataset": len(rows), "records": len(work), "skipped_without_input": skipped,
             "truncated_prompts": truncated}
    if not work:
        raise JobInputError(f"{label} {source}: no record has an input to attack" if skipped else
                            f"{label} {source}: has no records")
    return work, stats


def _sampler_class():  # noqa: ANN202
    import torch
    from transformers import LogitsProcessor

    class SeededRowSampler(LogitsProcessor):
        """Draws each row's next token from its own generator, then hands greedy search a one-hot.

        Runs after the temperature/top-k/top-p warpers, so the distribution is HF's; only the
        random draw is per row. Inverse CDF with u scaled by the row's total mass, so a token of
        probability 0 can never be picked.
        """

        def __init__(self, generators: list[torch.Generator]) -> None:
            self.generators = generators

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            probs = torch.softmax(scores.float(), dim=-1)
            cdf = probs.cumsum(dim=-1)
            u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
            u = (u.to(cdf.device) * cdf[:, -1].double()).float().unsqueeze(1)
            idx = torch.searchsorted(cdf, u, right=True).clamp(max=scores.shape[-1] - 1)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, idx, 0.0)

    return SeededRowSampler


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End of generation: the model's generation_config eos ids plus the tokenizer's eos (end of turn for chat)."""
    ids: list[int] = []
    gc_eos = getattr(model.generation_config, "eos_token_id", None)
    for v in (gc_eos if isinstance(gc_eos, list) else [gc_eos]) + [tokenizer.eos_token_id]:
        if v is not None and v not in ids:
            ids.append(int(v))
    return ids


class HFGenerator:
    def __init__(self, spec: GenerateSpec, model: Any, tokenizer: Any, device: str) -> None:
        import torch
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.torch = torch
        self.spec = spec
        self.model = model
        self.tok = tokenizer
        self.device = device
        self.eos = _eos_ids(model, tokenizer)
        # A fresh config: the model's own sampling defaults (e.g. temperature 0.6 in generation_config.json) must not
        # leak in; the spec is the whole truth and is recorded.
        self.gc = GenerationConfig(max_new_tokens=spec.max_new_tokens, do_sample=False, num_beams=1,
                                   repetition_penalty=spec.repetition_penalty, eos_token_id=self.eos,
                                   pad_token_id=tokenizer.pad_token_id)
        # transformers 5 fills every field a passed config does not set explicitly from model.generation_config
        # (a checkpoint's no_repeat_ngram_size or min_new_tokens would apply on top of ours), so it is replaced.
        model.generation_config = self.gc
        self.sampling = spec.temperature > 0
        self.warpers: list[Any] = []
        if self.sampling:
            if spec.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(spec.temperature))
            if spec.top_k > 0:
                self.warpers.append(TopKLogitsWarper(spec.top_k))
            if spec.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(spec.top_p))
        self.Processors = LogitsProcessorList
        self.Sampler = _sampler_class()

    def generate(self, items: list[Work]) -> list[list[tuple[str, int, bool]]]:
        """For each item, n (text, generated token count, finished with eos) in sample order."""
        torch = self.torch
        n = self.spec.n
        seqs = [it.ids for it in items for _ in range(n)]
        ids, mask, _ = pad(seqs, self.tok.pad_token_id, "left")
        processors = self.Processors(list(self.warpers))
        if self.sampling:
            gens = []
            for it in items:
                for j in range(n):
                    g = torch.Generator(device="cpu")
                    g.manual_seed(row_seed(self.spec.seed, it.key, j))
                    gens.append(g)
            processors.append(self.Sampler(gens))
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      generation_config=self.gc, logits_processor=processors)
        new = out[:, ids.shape[1]:].tolist()
        eos = set(self.eos)
        results: list[list[tuple[str, int, bool]]] = []
        for r in range(len(items)):
            samples = []
            for j in range(n):
                toks = new[r * n + j]
                cut = next((k for k, t in enumerate(toks) if t in eos), None)
                finished = cut is not None
                body = toks[:cut] if finished else toks
                text = self.tok.decode(body, skip_special_tokens=True)
                samples.append((text.strip() if self.spec.strip_response else text,
                                len(body) + (1 if finished else 0), finished))
            results.append(samples)
        return results


def _generator_meta(spec: GenerateSpec, model_info: dict[str, Any]) -> dict[str, Any]:
    meta = {"model": model_info.get("path"), "revision": model_info.get("revision"),
            "commit": model_info.get("commit"), "backend": spec.backend,
            **describe(spec.template, spec.input_join, spec.system_prompt),
            "temperature": spec.temperature, "top_p": spec.top_p, "top_k": spec.top_k,
            "repetition_penalty": spec.repetition_penalty, "max_new_tokens": spec.max_new_tokens,
            "n": spec.n, "seed": spec.seed}
    if spec.select != "none":
        meta["select"] = spec.select
    if spec.reward_model is not None:
        meta["reward_model"] = spec.reward_model.path
    if spec.attack != "none":
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
    if spec.attack != "none":
        row["attack"] = spec.attack
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
        _run_vllm(spec, ctx, tokenizer, work, pending, out, stats)
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
        ctx.events.info("generate: model loaded", model=info, eos_token_ids=gen.eos,
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


# ----------------------------------------------------------------------------------------------
# vLLM backend (cannot be exercised without a GPU and vLLM; written against vLLM's stable offline API)


def _run_vllm(spec: GenerateSpec, ctx: JobContext, tokenizer: Any, work: list[Work], pending: list[Work],
              out: ResumableRows, stats: dict[str, Any]) -> None:
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise JobInputError("backend vllm: vLLM is not installed in this environment; pip install vllm, or use backend hf") from e
    import torch

    if not torch.cuda.is_available():
        raise JobInputError("backend vllm: needs a CUDA GPU; use backend hf on the CPU")
    dtype = "bfloat16" if spec.model.dtype == "auto" else spec.model.dtype
    llm = LLM(model=spec.model.path, tokenizer=spec.model.path, revision=spec.model.revision,
              trust_remote_code=spec.model.trust_remote_code, dtype=dtype, load_format="safetensors",
              gpu_memory_utilization=spec.gpu_memory_utilization, seed=spec.seed,
              tensor_parallel_size=max(1, spec.gpus), max_model_len=spec.max_model_len)
    info = {"path": spec.model.path, "revision": spec.model.revision, "dtype": dtype, "backend": "vllm",
            "gpu_memory_utilization": spec.gpu_memory_utilization}
    meta = _generator_meta(spec, info)
    rm = None
    if spec.reward_model is not None:
        from engine.jobs.scorers.reward import RewardModel

        rm = RewardModel(spec.reward_model, "cuda", spec.reward_max_length, max(1, spec.batch_size))
    ctx.events.info("generate: vLLM engine ready", model=info)

    def params(w: Work) -> Any:
        return SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p,
                              top_k=spec.top_k if spec.top_k > 0 else -1, repetition_penalty=spec.repetition_penalty,
                              max_tokens=spec.max_new_tokens, seed=row_seed(spec.seed, w.key, 0),
                              skip_special_tokens=True)  # vLLM stops at the generation_config and tokenizer eos

    throughput = Throughput()
    total = len(work)
    n_done = total - len(pending)
    ctx.events.progress(n_done, total, "records")
    chunk = max(64, spec.batch_size * 8)  # vLLM batches continuously inside a chunk; chunks bound what a kill loses
    for start in range(0, len(pending), chunk):
        items = pending[start:start + chunk]
        prompts = [{"prompt_token_ids": w.ids} for w in items]  # token ids: no second BOS from re-tokenizing
        throughput.start()
        results = llm.generate(prompts, [params(w) for w in items], use_tqdm=False)
        throughput.stop()
        rows = []
        for w, res in zip(items, results, strict=True):
            samples = []
            for o in res.outputs:
                text = o.text.strip() if spec.strip_response else o.text
                samples.append((text, len(o.token_ids), o.finish_reason == "stop"))
            throughput.real_tokens += sum(s[1] for s in samples)
            rewards = None
            if rm is not None:
                rewards = rm.score_ids([rm.encode(w.user, s[0], w.messages) for s in samples])
            rows.append(_output_row(spec, w, samples, rewards, meta))
        out.append(rows)
        n_done += len(rows)
        ctx.events.progress(n_done, total, "records")
        ctx.events.metric("gen_tokens_per_s", throughput.tokens_per_s, step=n_done)
    out.close()
    _finish(spec, ctx, out, total, stats, throughput, info, rm)
