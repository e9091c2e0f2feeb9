"""StruQ/SecAlign prompt formats, reserved delimiter tokens and the secure front-end (docs/science.md §9.1).

The strings are data from the SecAlign repository's `config.py` at the pinned commit and must match
it byte for byte: a model trained with one template and tested with another is not the model of
the paper. Note `[MARK] [INST][COLN]` (one space after [MARK], none before [COLN]) and the
lower-case textual delimiters used by test-time completion attacks.
"""

from __future__ import annotations

from typing import NamedTuple

# Reserved tokens added to a base model's vocabulary, and the text whose *first token's*
# embedding initialises each of them (input and output embeddings). [PAD] starts at the mean
# embedding instead (SecAlign `train.py` smart_tokenizer_and_embedding_resize).
SPECIAL_DELIMITER_TOKENS: tuple[str, ...] = ("[MARK]", "[INST]", "[INPT]", "[RESP]", "[COLN]")
SPECIAL_TOKEN_INIT_TEXT: dict[str, str] = {
    "[MARK]": "###",
    "[INST]": "instruction",
    "[INPT]": "input",
    "[RESP]": "response",
    "[COLN]": ":",
}
PAD_TOKEN = "[PAD]"
DEFAULT_EOS_TOKEN = "</s>"

# What the secure front-end deletes from the *data* part of a prompt, in this order.
FILTERED_TOKENS: tuple[str, ...] = ("[INST]", "[INPT]", "[RESP]", "[MARK]", "[COLN]", "##")


class Delimiters(NamedTuple):
    """The instruction, input and response headers of one prompt family."""

    instruction: str
    input: str
    response: str


def _delimiters(mark: str, inst: str, inpt: str, resp: str, colon: str) -> Delimiters:
    return Delimiters(f"{mark} {inst}{colon}", f"{mark} {inpt}{colon}", f"{mark} {resp}{colon}")


# Name = (mark, role word, colon), each "Text" or "Spcl"; SpclSpclSpcl is what StruQ and SecAlign train.
DELIMITERS: dict[str, Delimiters] = {
    "TextTextText": _delimiters("###", "instruction", "input", "response", ":"),
    "TextSpclText": _delimiters("###", "[INST]", "[INPT]", "[RESP]", ":"),
    "SpclTextText": _delimiters("[MARK]", "instruction", "input", "response", ":"),
    "SpclSpclText": _delimiters("[MARK]", "[INST]", "[INPT]", "[RESP]", ":"),
    "SpclSpclSpcl": _delimiters("[MARK]", "[INST]", "[INPT]", "[RESP]", "[COLN]"),
}
SPCL = DELIMITERS["SpclSpclSpcl"]
TEXT = DELIMITERS["TextTextText"]

SYS_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request."
)
SYS_NO_INPUT = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


class PromptFormat(NamedTuple):
    """`str.format` templates with `{instruction}` (and `{input}`) fields."""

    prompt_input: str
    prompt_no_input: str


def _prompt_format(d: Delimiters) -> PromptFormat:
    return PromptFormat(
        prompt_input=f"{SYS_INPUT}\n\n{d.instruction}\n{{instruction}}\n\n{d.input}\n{{input}}\n\n{d.response}\n",
        prompt_no_input=f"{SYS_NO_INPUT}\n\n{d.instruction}\n{{instruction}}\n\n{d.response}\n",
    )


PROMPT_FORMAT: dict[str, PromptFormat] = {name: _prompt_format(d) for name, d in DELIMITERS.items()}
PROMPT_INPUT = PROMPT_FORMAT["SpclSpclSpcl"].prompt_input
PROMPT_NO_INPUT = PROMPT_FORMAT["SpclSpclSpcl"].prompt_no_input


def format_prompt(instruction: str, data: str = "", delimiters: str = "SpclSpclSpcl") -> str:
    """The model prompt for one sample: `prompt_input` when `data` (the sample's input) is
    non-empty, else `prompt_no_input`.

    The target that follows it is `output + eos`, with the loss on the target tokens only (§9.1).
    """
    fmt = PROMPT_FORMAT[delimiters]
    if data:
        return fmt.prompt_input.format(instruction=instruction, input=data)
    return fmt.prompt_no_input.format(instruction=instruction)


def recursive_filter(data: str) -> str:
    """The secure front-end: delete the reserved tokens and "##" from data until none is left (§9.1).

    One pass deletes each filtered string in turn; deleting can create a new occurrence
    ("[MA[MARK]RK]" -> "[MARK]"), hence the repetition. Applied to the data of defended models
    (StruQ, SecAlign) only. "a [MA[MARK]RK] b ### c" -> "a  b # c".
    """
    while any(token in data for token in FILTERED_TOKENS):
        for token in FILTERED_TOKENS:
            data = data.replace(token, "")
    return data
