"""The one way messages become prompt tokens: the server, capture, vector building and probe training all call it.

A probe trained on text rendered one way and read on text rendered another is a
train/serve mismatch, so there is exactly one rendering, including for a model
without a chat template (plain "role: content" lines, then "assistant:").
"""

from __future__ import annotations

from collections.abc import Sequence

# For a tokenizer without a chat template: one "role: content" line per message,
# then the cue for the assistant's turn.
FALLBACK_LINE = "{role}: {content}\n"
FALLBACK_GENERATION_CUE = "assistant:"


def user_turn(text: str, system: str | None = None) -> list[dict]:
    """A single user message, after an optional system message."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def wants_generation_prompt(messages: Sequence[dict]) -> bool:
    """Cue the assistant unless the last message is the assistant's own (a reply to continue, or to read)."""
    return not messages or messages[-1]["role"] != "assistant"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer, messages: Sequence[dict], add_generation_prompt: bool | None = None, tools: list | None = None) -> list[int]:
    """Token ids of `messages` in the model's chat template (or the plain fallback).

    `add_generation_prompt` defaults to wants_generation_prompt(messages). Errors from
    the template itself (jinja refusing a role order, say) propagate to the caller.
    `tools` (OpenAI function tools) go to a template that renders tools itself.
    """
    if add_generation_prompt is None:
        add_generation_prompt = wants_generation_prompt(messages)
    if not has_chat_template(tokenizer):
        text = "".join(FALLBACK_LINE.format(role=m["role"], content=m["content"]) for m in messages)
        return list(tokenizer.encode(text + (FALLBACK_GENERATION_CUE if add_generation_prompt else "")))
    extra = {"tools": tools} if tools else {}
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, **extra)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding
        ids = ids["input_ids"]
    return [int(t) for t in ids]
