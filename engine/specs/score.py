"""Scoring: per-sample scores and per-job aggregates (docs/science.md §0-§4, §7, §9.6, §10).

Torch-free: the spec is validated in the CLI, the TUI and the worker. `engine.jobs.score` does the
work; every choice docs/science.md calls UNPINNED is a field here and is recorded with the result.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from engine.specs.base import JobSpecBase, StrictModel
from engine.specs.common import ModelRef
from engine.specs.form import form

_FIELD_RE = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$"


class _Batched(StrictModel):
    batch_size: int = Field(8, ge=1, le=4096)
    """Most records per forward pass."""
    max_batch_tokens: int = Field(16384, ge=16)
    """Token budget per forward pass (rows x longest row). Records are sorted longest first, so an OOM shows in
    the first batch and the ETA is pessimistic."""


class RewardScorer(_Batched):
    """Reward from a sequence-classification reward model, with its own chat template (§2)."""

    type: Literal["reward"] = "reward"
    model: ModelRef
    """The reward model (AutoModelForSequenceClassification, one output; or a remote-code head with `.score`)."""
    max_length: int = Field(4096, ge=8)
    """Truncation in tokens (§2: 4096); truncated records are counted."""
    field: str = Field("reward", pattern=_FIELD_RE)
    """Name of the per-sample field (use e.g. 'reward_rm3' to score with several RMs in one job)."""


class LossScorer(_Batched):
    """Response loss L(A|Q) and perplexity under a model (§0); with `ifd`, also L(A) and IFD (§1)."""

    type: Literal["loss"] = "loss"
    model: ModelRef
    """The model whose loss is measured: GPT-2 for IFD-GPT2/PPL-GPT2, the base model for -Self and CAR."""
    template: Literal["chat", "raw", "superfiltering", "struq", "alpaca"] = "chat"
    """How the prompt prefix Q is built (UNPINNED in the CAR paper, §1.1; recorded): 'chat' the model's chat
    template (the SFT template, the recommended default for -Self), 'superfiltering' '{instruction}\\n{input}\\n',
    'raw' the instruction (input joined as for generation), 'struq' §9.1, 'alpaca' the Alpaca prompt."""
    append_eos: bool = False
    """Score the end-of-turn/eos token after the response as part of A (UNPINNED; Superfiltering does not)."""
    ifd: bool = False
    """Also compute the unconditional loss L(A) and both IFD forms (§1.1)."""
    ifd_form: Literal["loss", "ppl"] = "loss"
    """Which IFD form '{prefix}_ifd' holds (UNPINNED, §1.1): L(A|Q)/L(A) or PPL(A|Q)/PPL(A). Both are also stored
    as '{prefix}_ifd_loss' and '{prefix}_ifd_ppl'."""
    max_length: int = Field(1024, ge=8)
    """Truncation of prompt + response in tokens (Superfiltering: 1024 for GPT-2); truncated records are counted."""
    prefix: str = Field("loss", pattern=_FIELD_RE)
    """Field name prefix, so one job can score under several models (e.g. 'loss_gpt2', 'loss_self')."""


class LengthScorer(StrictModel):
    """Response length in characters, and in tokens of a fixed tokenizer (§5; the tokenizer is UNPINNED)."""

    type: Literal["length"] = "length"
    tokenizer: str | None = None
    """Hub id or folder of the tokenizer that counts tokens; None counts characters only."""


class InjectionScorer(StrictModel):
    """Attack success: begin-with (reported) and in-response (stored), §9.6."""

    type: Literal["injection"] = "injection"
    keyword: str = Field("hacked", min_length=1)
    """The injected word the response is tested for, case-insensitively."""
    attack_field: str = "attack"
    """Record field naming the attack (a generate job writes it), for ASR per attack and Max ASR per family."""


def _check_endpoint(endpoint: str | None, endpoint_model: str | None) -> None:
    """The judge and correctness scorers' shared rule for an OpenAI-compatible endpoint."""
    if endpoint is not None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint: must be an http:// or https:// URL")
        if not endpoint_model:
            raise ValueError("endpoint_model: name the model the endpoint should use")


class Baseline(StrictModel):
    """Which outputs a judge compares against, recorded with every win rate (a WR means nothing without it)."""

    model: str = Field(min_length=1)
    """The baseline model's name, e.g. 'gpt4_1106_preview' (AlpacaEval 2), 'text_davinci_003' (AlpacaEval 1, SecAlign's
    utility), 'gpt-4-0314' (Arena-Hard v0.1)."""
    dataset: str | None = None
    """Where its outputs come from, e.g. 'tatsu-lab/alpaca_eval'."""
    config: str | None = None
    """The dataset config, e.g. 'alpaca_eval_gpt4_baseline' (GPT-4 Turbo's outputs) or 'alpaca_eval' (davinci-003's)."""
    field: str | None = None
    """The record field holding its outputs; None means the scorer's `reference_field`."""


class JudgeScorer(StrictModel):
    """Pairwise preference against a reference output (§7.1): local judge logprobs, an HTTP endpoint, or a reward
    model."""

    type: Literal["judge"] = "judge"
    model: ModelRef | None = None
    """Local judge model (a causal LM with a chat template); or set `endpoint` or `reward_model`."""
    endpoint: str | None = None
    """OpenAI-compatible base URL (e.g. http://localhost:8000/v1); POST {endpoint}/chat/completions."""
    endpoint_model: str | None = None
    """Model name sent to the endpoint."""
    reward_model: ModelRef | None = None
    """A reward model as the judge (a local stand-in for an LLM judge, NOT AlpacaEval's annotator; label its win
    rates so): P(model wins) = sigmoid((r(response) - r(reference)) / temperature), with r scored as the `reward`
    scorer does. No order randomisation (the RM sees each output alone); same win-rate metrics."""
    temperature: float = Field(1.0, gt=0)
    """Scale of the reward difference for `reward_model` (only used there): larger is a softer judge."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key in a spec)."""
    reference_field: str = "reference"
    """Record field with the baseline output (AlpacaFarm's davinci-003 outputs are in 'output')."""
    baseline: Baseline | None = None
    """What the reference outputs are (model, dataset, config, field); recorded in the summary and shown with results."""
    seed: int = 0
    """Seed of the per-instruction order randomisation (alpaca_eval's annotator seed, 0)."""
    batch_size: int = Field(4, ge=1, le=1024)
    """Prompts per forward pass for a local judge."""
    max_length: int = Field(8192, ge=64)
    """Judge prompts longer than this are refused for the item (preference NaN, counted), never silently cut."""
    timeout_s: float = Field(60.0, gt=0)
    """Per-request timeout for an endpoint."""
    max_retries: int = Field(4, ge=0, le=20)
    """Retries on HTTP 429/5xx and network errors: the server's Retry-After, else exponential backoff with jitter."""
    max_concurrency: int = Field(8, ge=1, le=256)
    """Endpoint requests in flight at once (answers keep the records' order, so scores equal the sequential ones)."""
    requests_per_minute: int | None = Field(None, ge=1)
    """The endpoint's request budget per minute (your API tier); requests wait rather than be refused. None: no limit."""
    tokens_per_minute: int | None = Field(None, ge=1)
    """The endpoint's token budget per minute (estimated before sending, corrected by the reply's usage). None: no limit."""

    @model_validator(mode="after")
    def _one_judge(self) -> JudgeScorer:
        given = [k for k in ("model", "endpoint", "reward_model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("judge: give exactly one of `model` (local LM), `endpoint` (HTTP) or `reward_model`"
                             + (f", not {' and '.join(given)}" if given else ""))
        if self.reward_model is None and self.temperature != 1.0:
            raise ValueError("temperature: only used with `reward_model`")
        _check_endpoint(self.endpoint, self.endpoint_model)
        return self


class ArenaHardScorer(StrictModel):
    """Arena-Hard v0.1 (§7.3): two games per prompt (baseline as A, then as B), the judge's 5-point verdict
    [[A>>B]] .. [[B>>A]], a decisive verdict counted as 3 battles, WR = mean score with ties as half.

    With an `endpoint` the judge writes its own answer and explanation first (Arena-Hard's prompt, temperature 0,
    up to `max_tokens`) and the verdict is parsed from its text. A local `model` instead ranks the five verdicts by
    their likelihood after 'My final verdict is ' (a local stand-in, labelled as such: it cannot reason first)."""

    type: Literal["arena_hard"] = "arena_hard"
    model: ModelRef | None = None
    """Local judge model (a causal LM with a chat template)."""
    endpoint: str | None = None
    """OpenAI-compatible base URL; POST {endpoint}/chat/completions (the paper's judge: gpt-4-1106-preview)."""
    endpoint_model: str | None = None
    """Model name sent to the endpoint."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key in a spec)."""
    reference_field: str = "baseline"
    """Record field with the baseline's answer (Arena-Hard v0.1: gpt-4-0314's)."""
    baseline: Baseline | None = None
    """What the reference answers are; recorded in the summary."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Endpoint judge temperature (Arena-Hard: 0)."""
    max_tokens: int = Field(4096, ge=16)
    """Longest endpoint judgment (Arena-Hard: 4096)."""
    batch_size: int = Field(4, ge=1, le=1024)
    """Prompts per forward pass for a local judge."""
    max_length: int = Field(8192, ge=64)
    """A local judge prompt longer than this is refused for the game (no verdict, counted), never silently cut."""
    timeout_s: float = Field(120.0, gt=0)
    """Per-request timeout for an endpoint."""
    max_retries: int = Field(4, ge=0, le=20)
    """Retries on HTTP 429/5xx and network errors: the server's Retry-After, else exponential backoff with jitter."""
    max_concurrency: int = Field(8, ge=1, le=256)
    """Endpoint requests in flight at once (verdicts keep the records' order, so scores equal the sequential ones)."""
    requests_per_minute: int | None = Field(None, ge=1)
    """The endpoint's request budget per minute (your API tier); requests wait rather than be refused. None: no limit."""
    tokens_per_minute: int | None = Field(None, ge=1)
    """The endpoint's token budget per minute (estimated before sending, corrected by the reply's usage). None: no limit."""

    @model_validator(mode="after")
    def _one_judge(self) -> ArenaHardScorer:
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("arena_hard: give exactly one of `model` (local) or `endpoint` (HTTP)")
        _check_endpoint(self.endpoint, self.endpoint_model)
        return self


class ConfidenceScorer(_Batched):
    """P(correct) of each answer (§10.2-§10.3): the zero-shot uncertainty query on `model` (Zero-Shot Classifier), or
    a trained `estimator` (Probe, LoRA, LoRA + Prompt); correctness from `label_field` or `target_field`."""

    type: Literal["confidence"] = "confidence"
    model: ModelRef | None = None
    """Zero-shot: the model asked whether the answer is correct (the frozen model, §10.3). With `estimator`: the base
    model to put under it, if not the one its calibration.json names (e.g. a local copy of that hub model)."""
    estimator: str | None = None
    """A calibration finetune job's output folder (`${stages.NAME.output}`): probe, lora or lora_prompt, with its
    temperature (the '-TS' variant, fitted on the training pool's validation split) in calibration.json."""
    question_field: str | None = None
    """Record field with the rendered question c ending in 'Answer:'; None uses the instruction (+ input)."""
    label_field: str = "correct"
    """Record field with the 0/1 correctness label (a correctness scorer earlier in the same job may write it)."""
    target_field: str | None = None
    """If the label field is absent: the gold answer, and y = [target in answer] (the MC 'substring' rule, §10.1)."""
    sanitize: bool = True
    """Sanitise the answer as §10.1 does before the query ('\\n\\n'->'\\n', ':\\n'->':', strip, first line)."""
    chat_template: bool = False
    """Zero-shot only: wrap the query in the model's chat template (CT-REPO does so only for Llama-3-Instruct, §10.2)."""
    drop_conf_one: bool = True
    """Official ECE quirk (conf == 1.0 falls in no bin, §10.4); the corrected ECE is reported too."""
    max_length: int = Field(4096, ge=16)
    """Queries longer than this keep their last tokens (left truncation keeps the question); an estimator's
    '{c} {p}' text keeps its first tokens, as in training; counted."""

    @model_validator(mode="after")
    def _model_or_estimator(self) -> ConfidenceScorer:
        if self.model is None and self.estimator is None:
            raise ValueError("confidence: give `model` (zero-shot query) or `estimator` (a trained calibration model)")
        if self.estimator is not None and self.chat_template:
            raise ValueError("chat_template: a trained estimator reads the query as it was trained (raw text)")
        return self


class CorrectnessScorer(_Batched):
    """Whether each generated answer is correct (§10.1): a 0/1 field the confidence scorer and calibration training read.

    'substring': `target in answer`, case-sensitive (the MC rule); 'normalized': SQuAD-normalised exact match (not in
    the paper, UNPINNED); 'judge': the equivalency question to a judge (GPT-3.5-Turbo-1106 in the paper through an
    OpenAI-compatible `endpoint`, or a local `model`, recorded as a replacement), y = 1 if 'yes' is in its reply."""

    type: Literal["correctness"] = "correctness"
    mode: Literal["substring", "normalized", "judge"] = "substring"
    """How y is decided (see above)."""
    target_field: str = "target"
    """Record field with the gold answer."""
    question_field: str | None = None
    """Record field with the question shown to the judge; None uses the instruction (+ input)."""
    field: str = Field("correct", pattern=_FIELD_RE)
    """Name of the 0/1 output field (with 'judge', '{field}_reply' keeps the judge's text)."""
    sanitize: bool = True
    """Sanitise the answer as §10.1 does first (idempotent: harmless after a generate job with `sanitize`)."""
    model: ModelRef | None = None
    """'judge' with a local causal LM (with a chat template); recorded as a LOCAL replacement judge."""
    endpoint: str | None = None
    """'judge' through an OpenAI-compatible base URL (e.g. https://api.openai.com/v1); POST {endpoint}/chat/completions."""
    endpoint_model: str | None = None
    """Model name sent to the endpoint (the paper: gpt-3.5-turbo-1106)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (never put the key in a spec)."""
    judge_prompt: str | None = None
    """The user prompt with {question}, {target} and {answer}; None uses calibration-tuning's
    PROMPT_ANSWER_KEY_EQUIVALENCY verbatim."""
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    """Endpoint judge temperature; None sends none (the API default, 1.0 on OpenAI), as calibration-tuning does."""
    max_new_tokens: int = Field(8, ge=1, le=256)
    """Longest reply of a local judge, in tokens ('yes'/'no' needs one or two); an endpoint gets no max_tokens, as
    calibration-tuning sends none."""
    max_length: int = Field(4096, ge=16)
    """A local judge's prompt keeps its last tokens beyond this."""
    timeout_s: float = Field(60.0, gt=0)
    """Per-request timeout for an endpoint."""
    max_retries: int = Field(4, ge=0, le=20)
    """Retries on HTTP 429/5xx and network errors: the server's Retry-After, else exponential backoff with jitter."""
    max_concurrency: int = Field(8, ge=1, le=256)
    """Endpoint requests in flight at once (answers keep the records' order, so scores equal the sequential ones)."""
    requests_per_minute: int | None = Field(None, ge=1)
    """The endpoint's request budget per minute (your API tier); requests wait rather than be refused. None: no limit."""
    tokens_per_minute: int | None = Field(None, ge=1)
    """The endpoint's token budget per minute (estimated before sending, corrected by the reply's usage). None: no limit."""

    @model_validator(mode="after")
    def _judge(self) -> CorrectnessScorer:
        if self.mode != "judge":
            if self.model is not None or self.endpoint is not None:
                raise ValueError(f"mode: {self.mode!r} needs no judge; remove model/endpoint or use mode 'judge'")
            return self
        if (self.model is None) == (self.endpoint is None):
            raise ValueError("mode judge: give exactly one of `model` (local) or `endpoint` (HTTP)")
        _check_endpoint(self.endpoint, self.endpoint_model)
        if self.judge_prompt is not None:
            for key in ("{question}", "{target}", "{answer}"):
                if key not in self.judge_prompt:
                    raise ValueError(f"judge_prompt: must contain {key}")
        return self


Scorer = Annotated[
    RewardScorer | LossScorer | LengthScorer | InjectionScorer | JudgeScorer | ArenaHardScorer | ConfidenceScorer
    | CorrectnessScorer,
    Field(discriminator="type"),
]


class ScoreSpec(JobSpecBase):
    """Add per-sample fields to a records file and report per-job aggregates."""

    kind: Literal["score"] = "score"
    records: str | list[str] = Field(min_length=1, json_schema_extra=form(common=True))
    """A records file (jsonl/json/parquet), e.g. a generate job's output; a list concatenates several (e.g. one
    generate job per attack)."""
    instruction_field: str = "instruction"
    """Record field with the instruction."""
    input_field: str | None = "input"
    """Record field with the optional input, joined to the instruction with `input_join`; None if absent."""
    input_join: str = "\n\n"
    """How the input is appended to the instruction for chat templates and the judge (alpaca_eval's convention)."""
    response_field: str = "response"
    """Record field with the response being scored."""
    group_field: str | None = None
    """If set, every aggregate is also reported per group as 'metric/group' (e.g. MMLU subject, base model)."""
    scorers: list[Scorer] = Field(min_length=1, json_schema_extra=form(common=True))
    """What to compute for every record, in order; a scorer sees the fields earlier ones wrote (e.g. correctness
    before confidence)."""
    carry: list[str] = []
    """Record fields computed by an earlier job (e.g. a teacher's rewards and GPT-2 IFD, scored once per teacher) that
    this job also averages and reports, so every metric of a (teacher, student) pair sits on one job without a second
    model pass."""
    car_beta: float | list[float] | None = None
    """If set, report CAR = mean reward / (1 + beta * mean loss) (§3; beta is UNPINNED, recorded). A list reports
    'car_b{beta}' for each (§3 suggests sweeping 0.5, 1, 2, 3, 5)."""
    car_reward_field: str | None = None
    """Reward field used by CAR; default the first reward scorer's."""
    car_loss_field: str | None = None
    """Loss field used by CAR; default the first loss scorer's L(A|Q)."""

    @field_validator("car_beta")
    @classmethod
    def _non_negative(cls, v: float | list[float] | None) -> float | list[float] | None:
        values = [] if v is None else (v if isinstance(v, list) else [v])
        if any(b < 0 for b in values):
            raise ValueError("beta must be >= 0")
        if isinstance(v, list) and not v:
            raise ValueError("give at least one beta")
        return v
