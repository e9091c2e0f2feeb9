"""Generation: teacher responses, sampling sweeps, best-of-N (docs/science.md §5, §8.3, §9.5, §10.1).

Torch-free: the spec is validated in the CLI, the TUI and the worker, which never load the ML
stack. `engine.jobs.generate` does the work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from engine.specs.base import JobSpecBase
from engine.specs.common import DatasetRef, ModelRef
from engine.specs.form import form

PromptTemplate = Literal["chat", "struq", "alpaca", "raw"]
VLLM = form(when={"backend": ["vllm"]})  # the New-job form shows these only for vLLM
Attack = Literal["none", "naive", "ignore", "completion_real", "completion_realcmb"]


class GenerateSpec(JobSpecBase):
    """Generate responses for every record of a dataset with one model."""

    kind: Literal["generate"] = "generate"
    model: ModelRef = Field(json_schema_extra=form(common=True))
    """The generator."""
    dataset: DatasetRef = Field(json_schema_extra=form(common=True))
    """The prompts."""
    template: PromptTemplate = "chat"
    """'chat': the model's own chat template (§5; the job fails if the model has none); 'struq': the StruQ/SecAlign
    SpclSpclSpcl format (§9.1); 'alpaca': the Alpaca prompt with '### Instruction:' headers; 'raw': the instruction
    text as is (a calibration question already ending in 'Answer:', §10.2)."""
    system_prompt: str | None = Field(None, json_schema_extra=form(when={"template": ["chat"]}))
    """Optional system message, for 'chat' only."""
    input_join: str = "\n\n"
    """How a record's input is appended to its instruction for 'chat' and 'raw' (alpaca_eval's convention;
    UNPINNED for other datasets, recorded with the output). 'struq' and 'alpaca' have their own input section."""
    max_new_tokens: int = Field(2048, ge=1, le=131072, json_schema_extra=form(common=True))
    """Longest response, in tokens (§5 default 2048; SecAlign tests 512; calibration answers 30)."""
    temperature: float = Field(0.0, ge=0.0, le=10.0, json_schema_extra=form(common=True))
    """0 is greedy decoding (the CAR paper's default, §5); > 0 samples."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling threshold; 1.0 turns it off."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling; 0 turns it off."""
    repetition_penalty: float = Field(1.0, gt=0.0)
    """HF/CTRL repetition penalty; 1.0 is none."""
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    """OpenAI's presence penalty: subtracted once from the logit of every token already generated (not the prompt).
    ExPO's evaluation uses 0.1 (§8.3). The HF backend applies it with a logits processor, vLLM natively."""
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    """OpenAI's frequency penalty: subtracted from a token's logit once per time it was generated so far (§8.3: 0.1)."""
    n: int = Field(1, ge=1, le=64)
    """Samples per prompt (§5 reject sampling uses 5)."""
    select: Literal["none", "best", "worst", "first"] = "none"
    """With n > 1: keep all and report the first as `response` ('none'), or set `response` to the reward argmax
    ('best'), argmin ('worst') or the first sample ('first', the paper's 'Sampling'); ties go to the first index (§5).
    All samples are always kept in `responses`."""
    reward_model: ModelRef | None = None
    """Sequence-classification reward model; needed for best/worst, and when given every sample's reward is stored."""
    reward_max_length: int = Field(4096, ge=8)
    """Truncation of the reward model's input in tokens (§2: 4096)."""
    batch_size: int = Field(8, ge=1, le=4096)
    """Prompts per batch; each prompt brings n rows. Batches are length-sorted and left-padded; output order is the
    dataset's."""
    max_prompt_tokens: int = Field(4096, ge=1)
    """Prompts longer than this keep their last tokens (left truncation, so the generation prompt survives); counted."""
    strip_response: bool = True
    """Strip surrounding whitespace from responses (Magpie's gen_res.py and SecAlign's test.py both strip)."""
    sanitize: bool = False
    """Sanitise every response as §10.1 does for calibration answers ('\\n\\n'->'\\n', ':\\n'->':', leading and
    trailing newlines stripped, first line kept); the unsanitised text is kept in `response_raw`."""
    backend: Literal["hf", "vllm"] = "hf"
    """'hf': transformers generate, data parallel over the job's GPUs through accelerate; 'vllm': vLLM if installed."""
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, json_schema_extra=VLLM)
    """vLLM's share of each GPU's memory. vLLM's own default (0.9 of the whole card) collides with any co-located
    job, so labdeck always passes this explicitly."""
    max_model_len: int | None = Field(None, ge=16, json_schema_extra=VLLM)
    """vLLM's context length (prompt + response); None lets vLLM use the model's (§5 used 4096)."""
    attack: Attack | list[Attack] = "none"
    """Prompt-injection attack built into records that have a non-empty input (§9.5); records without an input are
    skipped under an attack, as the paper's ASR counts only the 208 attacked samples. A list runs every attack in one
    job (the model is loaded once; each output record names its `attack`), in the order given."""
    defense_filter: bool = False
    """Apply the secure front-end filter to the data part (§9.1): for StruQ/SecAlign models only."""

    @model_validator(mode="after")
    def _consistent(self) -> GenerateSpec:
        if self.select in ("best", "worst") and self.reward_model is None:
            raise ValueError("select: best/worst-of-N needs a reward_model")
        if self.select != "none" and self.n < 2:
            raise ValueError("select: choosing among samples needs n >= 2")
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n: several samples per prompt need temperature > 0 (greedy gives n copies)")
        if self.system_prompt is not None and self.template != "chat":
            raise ValueError("system_prompt: only the 'chat' template has a system turn")
        if self.dataset.messages_field and self.template != "chat":
            raise ValueError("dataset.messages_field: chat messages need template 'chat'")
        attacks = self.attacks()
        if attacks != ["none"] and self.dataset.messages_field:
            raise ValueError("attack: injections go into the input field; not supported with messages_field")
        if isinstance(self.attack, list):
            if not self.attack:
                raise ValueError("attack: name at least one attack")
            if len(set(self.attack)) != len(self.attack):
                raise ValueError("attack: an attack is listed twice")
            if "none" in self.attack and len(self.attack) > 1:
                raise ValueError("attack: 'none' cannot be mixed with attacks (its records would include the input-less ones)")
        return self

    def attacks(self) -> list[str]:
        """The attacks as a list (a single attack is a list of one)."""
        return list(self.attack) if isinstance(self.attack, list) else [self.attack]
