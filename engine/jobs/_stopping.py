"""Where an answer ends: the eos ids plus the chat template's end-of-turn token.

A base model fine-tuned with a chat template learns to close its turn with the template's
end-of-turn token (`<|im_end|>` for ChatML/Qwen, `<|eot_id|>` for Llama 3, `<end_of_turn>` for
Gemma 2), but its checkpoint still names only the pre-training eos (`<|endoftext|>`,
`<|end_of_text|>`, `<eos>`) as the end of generation. Decoding that stops only at the eos runs
every answer to `max_new_tokens`, and a judge then compares rambling text. So the fine-tune job
adds the end-of-turn id to the saved `generation_config.eos_token_id`, and the generate job stops
at every end-of-turn id of the template it prompts with.

The end-of-turn token is read off the template itself: an assistant turn is rendered around a
marker and the first special token after the marker's text is the one the template closes a turn
with. No name list is needed for ChatML, Llama 3, Gemma or Mistral templates.
"""

from __future__ import annotations

from typing import Any

_MARKER = "LABDECK_END_OF_TURN_PROBE"


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The special token(s) a chat template writes right after an assistant message ([] without a template)."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARKER}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    except Exception:  # noqa: BLE001 - a template that cannot render a plain turn has no end of turn to read
        return []
    at = text.rfind(_MARKER)
    if at < 0:
        return []
    after = text[at + len(_MARKER):]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if getattr(t, "special", False)}
    for i in ids:
        if i in special:
            return [int(i)]
        if tokenizer.decode([i]).strip():
            return []  # text (not whitespace) before any special token: the template has no end-of-turn token
    return []


def stop_ids(generation_eos: Any, tokenizer: Any, chat: bool) -> list[int]:
    """End of generation: the checkpoint's eos ids, the tokenizer's eos, and with a chat template its end of turn."""
    ids: list[int] = []
    base = generation_eos if isinstance(generation_eos, list) else [generation_eos]
    for v in [*base, tokenizer.eos_token_id, *(end_of_turn_ids(tokenizer) if chat else [])]:
        if v is not None and int(v) not in ids:
            ids.append(int(v))
    return ids


def add_end_of_turn(model: Any, tokenizer: Any) -> list[int]:
    """Make a chat-tuned model stop at its end of turn: extend `generation_config.eos_token_id` in place.

    Returns the new list (recorded with the model), unchanged when the template has no end-of-turn token.
    """
    gc = getattr(model, "generation_config", None)
    if gc is None:
        return []
    ids = stop_ids(getattr(gc, "eos_token_id", None), tokenizer, chat=True)
    if ids:
        gc.eos_token_id = ids if len(ids) > 1 else ids[0]
    return ids
