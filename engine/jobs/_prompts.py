"""Prompt rendering shared by generation and scoring: the model's chat template or a named format.

Every metric that conditions on a prompt depends on how the prompt was built (docs/science.md §0:
"Record the template used to build P"), so the choice is a spec field and `describe()` returns
what to record. The StruQ/SecAlign strings and the test-time attacks live in
`engine.data.injection` (docs/science.md §9.1, §9.5); this module only decides which to apply.

Special tokens: a chat template writes its own (e.g. Llama-3's <|begin_of_text|>), so its text is
tokenized with `add_special_tokens=False`; the plain-text formats are tokenized with the
tokenizer's defaults (a Llama tokenizer adds <s>, as the papers' code does with `tokenizer(...)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.jobs._common import JobInputError

# The original Alpaca prompt (tatsu-lab/stanford_alpaca), capitalised headers.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


@dataclass(frozen=True)
class Prompt:
    text: str
    add_special_tokens: bool


def user_text(instruction: str, data: str, join: str) -> str:
    """The user turn: instruction, then the input after `join` when there is one (alpaca_eval uses '\\n\\n')."""
    return instruction + join + data if data else instruction


def chat_messages(instruction: str, data: str, join: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": user_text(instruction, data, join)})
    return msgs


def apply_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """Render with the tokenizer's chat template; a template that rejects a system turn gets it merged into the
    first user turn (Gemma-style templates raise on 'system')."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as e:  # noqa: BLE001 - jinja raises TemplateError, templates raise their own
        if messages and messages[0]["role"] == "system" and len(messages) > 1:
            merged = [{"role": messages[1]["role"], "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            return apply_chat(tokenizer, merged + messages[2:], add_generation_prompt)
        raise JobInputError(f"chat template failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def render(
    template: str,
    tokenizer: Any,
    instruction: str,
    data: str,
    *,
    join: str = "\n\n",
    system: str | None = None,
    messages: list[dict[str, str]] | None = None,
) -> Prompt:
    """The generation prompt for one record under a named template."""
    if template == "chat":
        if messages is None:
            messages = chat_messages(instruction, data, join, system)
        elif system and messages[0].get("role") != "system":
            messages = [{"role": "system", "content": system}, *messages]
        return Prompt(apply_chat(tokenizer, messages, True), False)
    if template == "struq":
        from engine.data.injection import format_prompt

        return Prompt(format_prompt(instruction, data), True)
    if template == "alpaca":
        fmt = ALPACA_PROMPT_INPUT if data else ALPACA_PROMPT_NO_INPUT
        return Prompt(fmt.format(instruction=instruction, input=data), True)
    if template == "raw":
        return Prompt(user_text(instruction, data, join), True)
    if template == "superfiltering":
        # Superfiltering's IFD prompt: "{instruction}\n{input}\n", or "{instruction}\n" without input (§1.1).
        return Prompt(f"{instruction}\n{data}\n" if data else f"{instruction}\n", True)
    raise JobInputError(f"template {template!r} is unknown")


def messages_of(row: dict[str, Any], field: str) -> list[dict[str, str]]:
    """A record's chat messages, without a trailing assistant turn (that is the reference, not the prompt)."""
    msgs = row.get(field)
    if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        raise JobInputError(f"field {field!r} must be a list of {{role, content}} messages")
    msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in msgs]
    while msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    if not msgs:
        raise JobInputError(f"field {field!r} has no user message")
    return msgs


def describe(template: str, join: str, system: str | None = None) -> dict[str, Any]:
    """What to record about how prompts were built."""
    out: dict[str, Any] = {"template": template}
    if template in ("chat", "raw"):
        out["input_join"] = join
    if system:
        out["system_prompt"] = system
    if template == "struq":
        out["format"] = "SpclSpclSpcl"
    return out
