"""The generate job's vLLM backend (cannot be exercised without a GPU and vLLM; written against vLLM's
stable offline API). Same records, seeds (per request), stop ids and penalties as the HF backend;
vLLM applies `presence_penalty` and `frequency_penalty` itself with OpenAI's semantics.
"""

from __future__ import annotations

from typing import Any

from engine.jobs._batching import Throughput
from engine.jobs._common import JobContext, JobInputError
from engine.jobs._decoding import row_seed
from engine.jobs._output import ResumableRows
from engine.jobs._stopping import stop_ids
from engine.specs.generate import GenerateSpec


def run_vllm(spec: GenerateSpec, ctx: JobContext, tokenizer: Any, work: list[Any], pending: list[Any],
              out: ResumableRows, stats: dict[str, Any], job: Any) -> None:
    """`job` is the generate module itself: its row and summary format (`_generator_meta`,
    `_output_row`, `_finish`), passed in so this module does not import the job that calls it."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as e:
        raise JobInputError("backend vllm: vLLM is not installed in this environment; pip install vllm, or use backend hf") from e
    import torch

    _finish, _generator_meta, _output_row = job._finish, job._generator_meta, job._output_row

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
    # vLLM stops at the generation_config's and the tokenizer's eos; the template's end of turn is added here
    stops = stop_ids(None, tokenizer, spec.template == "chat")
    ctx.events.info("generate: vLLM engine ready", model=info, stop_token_ids=stops)

    def params(w: Any) -> Any:
        return SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p,
                              top_k=spec.top_k if spec.top_k > 0 else -1, repetition_penalty=spec.repetition_penalty,
                              presence_penalty=spec.presence_penalty, frequency_penalty=spec.frequency_penalty,
                              max_tokens=spec.max_new_tokens, seed=row_seed(spec.seed, w.key, 0),
                              stop_token_ids=stops, skip_special_tokens=True)

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
