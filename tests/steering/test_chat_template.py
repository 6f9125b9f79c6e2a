"""One chat rendering: the server, capture and probe training give the same tokens for the same messages."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlx_interp.gateway.validation import _chat_tokens
from mlx_interp.probes.training import row_tokens
from mlx_interp.steering.capture import encode
from mlx_interp.steering.chat_template import render_chat


class NoTemplate:
    """The tiny model's tokenizer with its chat template taken away."""

    chat_template = None

    def __init__(self, tokenizer):
        self._tok = tokenizer

    def encode(self, text):
        return self._tok.encode(text)

    def apply_chat_template(self, *args, **kwargs):  # must never be reached without a template
        raise AssertionError("apply_chat_template called on a tokenizer without a template")


@pytest.fixture(params=["template", "no-template"])
def lm(request, tiny_llama):
    if request.param == "template":
        return tiny_llama
    return SimpleNamespace(tokenizer=NoTemplate(tiny_llama.tokenizer))


QUESTION = [{"role": "user", "content": "Is the sky green?"}]
ANSWERED = QUESTION + [{"role": "assistant", "content": "No, it is blue."}]


@pytest.mark.parametrize("messages", [QUESTION, ANSWERED], ids=["open", "answered"])
def test_server_and_training_render_the_same_tokens(lm, messages):
    served = _chat_tokens(messages, SimpleNamespace(tokenizer=lm.tokenizer))
    trained = row_tokens(lm, {"messages": messages})
    assert served == trained == render_chat(lm.tokenizer, messages)


def test_capture_of_a_chat_text_is_the_servers_user_turn(lm):
    assert encode(lm, "Is the sky green?", chat=True) == _chat_tokens(QUESTION, SimpleNamespace(tokenizer=lm.tokenizer))
    assert row_tokens(lm, {"text": "Is the sky green?"}, chat=True) == encode(lm, "Is the sky green?", chat=True)


def test_without_a_template_the_fallback_is_role_lines_then_the_assistant_cue(tiny_llama):
    tok = NoTemplate(tiny_llama.tokenizer)
    decode = tiny_llama.tokenizer.decode
    assert decode(render_chat(tok, QUESTION)) == "user: Is the sky green?\nassistant:"
    # a conversation ending in the assistant's turn is read as it stands (no new cue)
    assert decode(render_chat(tok, ANSWERED)) == "user: Is the sky green?\nassistant: No, it is blue.\n"


def test_with_a_template_the_cue_follows_the_last_role(tiny_llama):
    decode = tiny_llama.tokenizer.decode
    assert decode(render_chat(tiny_llama.tokenizer, QUESTION)).endswith("<|im_start|>assistant\n")
    assert decode(render_chat(tiny_llama.tokenizer, ANSWERED)).endswith("blue.<|im_end|>\n")
