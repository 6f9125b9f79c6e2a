"""Where a probe reads the residual stream, in training and when served (api.md section 4).

- `prompt_last`: the last prompt token, before anything is generated (the
  state after the generation prompt, e.g. after "<|im_start|>assistant\\n").
- `token`: every token of an answer; one reading per token, aggregated over
  the response by the probe's aggregation (mean, max or ema).
- `answer_end`: the last token of the answer's own text (the state after the
  model has read its last content token; the end-of-turn token is never fed,
  exactly as in generation, where the server stops at it).

Training and serving agree on what "the answer" is: the conversation without
its last (assistant) message, templated with the generation prompt, followed
by the tokens of that message's content. That is the sequence the model sees
when it generates the answer itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

PROMPT_LAST = "prompt_last"
TOKEN = "token"
ANSWER_END = "answer_end"
POSITIONS = (PROMPT_LAST, TOKEN, ANSWER_END)

# Probes written before positions existed. "last" was the last token of the whole
# templated example, i.e. the end of a finished answer; "mean" averaged every token,
# whose nearest served reading is per token with a mean aggregate. A probe with no
# position at all (built by hand) was always read per token, so it keeps that.
LEGACY_POSITIONS = {"last": ANSWER_END, "mean": TOKEN}
UNDECLARED_POSITION = TOKEN

# Capture this many sequences per forward batch (equal lengths only, no padding).
CAPTURE_CHUNK = 16


def declared_position(metadata: dict) -> str:
    """The position a probe was trained at (legacy names mapped), or ValueError for an unknown one."""
    value = metadata.get("position")
    if value is None:
        return UNDECLARED_POSITION
    if value in POSITIONS:
        return value
    if value in LEGACY_POSITIONS:
        return LEGACY_POSITIONS[value]
    raise ValueError(f"position {value!r} is not one of {', '.join(POSITIONS)}")


def reads_per_token(position: str) -> bool:
    return position == TOKEN


@dataclass(frozen=True)
class Spans:
    """One example's tokens and where its answer lies: tokens[answer_start:] is the answer."""

    tokens: list[int]
    answer_start: int

    def indices(self, position: str) -> list[int]:
        """Token indices whose states a probe at `position` is trained on."""
        n = len(self.tokens)
        if position == PROMPT_LAST:
            return [self.answer_start - 1 if self.answer_start > 0 else n - 1]
        if position == ANSWER_END:
            return [n - 1]  # with no answer yet, where it would begin: as the server reads max_tokens 0
        if position == TOKEN:
            if self.answer_start >= n:
                raise ValueError("position 'token' needs an answer (a last assistant turn); this example has none")
            return list(range(self.answer_start, n))
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")


def _template(tokenizer, messages: list[dict], generation_prompt: bool) -> list[int]:
    """The server's own rendering of messages (steering.chat_template): one rendering for training and serving."""
    from mlx_interp.steering.chat_template import render_chat

    return render_chat(tokenizer, messages, add_generation_prompt=generation_prompt)


def _encode_plain(tokenizer, text: str) -> list[int]:
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    try:
        return [int(t) for t in inner.encode(text, add_special_tokens=False)]
    except TypeError:  # a tokenizer without the keyword adds nothing anyway
        return [int(t) for t in inner.encode(text)]


def example_spans(lm, row: dict, chat: bool = False) -> Spans:
    """Tokens and answer start of a labelled row.

    messages ending with an assistant turn: the prompt is the rest under the
    chat template with the generation prompt, the answer that turn's content.
    messages ending with a user turn: all prompt, no answer. A "text" row is a
    user turn (chat: all prompt) or raw text, which is read as a whole at
    every position (prompt_last and answer_end at its last token, token at
    every token): the way `/v1/completions` with max_tokens 0 scores any text.
    """
    tok = lm.tokenizer
    if "messages" in row:
        messages = row["messages"]
        if messages[-1]["role"] == "assistant":
            prompt = _template(tok, messages[:-1], True)
            return Spans(prompt + _encode_plain(tok, messages[-1]["content"]), len(prompt))
        ids = _template(tok, messages, True)
        return Spans(ids, len(ids))
    if chat:
        ids = _template(tok, [{"role": "user", "content": row["text"]}], True)
        return Spans(ids, len(ids))
    return Spans([int(t) for t in tok.encode(row["text"])], 0)


def capture_at(lm, spans: Sequence[Spans], position: str, layers: Sequence[int] | None = None, progress: bool = False):
    """States at each example's `position` indices.

    Returns (X (n, L, D) float32, example (n,) int: which example each state row came from).
    """
    return capture_positions(lm, spans, (position,), layers=layers, progress=progress)[position]


def capture_positions(lm, spans: Sequence[Spans], positions: Sequence[str], layers: Sequence[int] | None = None,
                      progress: bool = False) -> dict:
    """{position: (X, example)} for several positions from one forward pass per example.

    Sequences are captured a few at a time and sliced at once, so memory stays
    proportional to the states kept, not to every token of every layer. Layers
    outside `layers` hold zeros (X keeps the model's layer indexing).
    """
    from mlx_interp.steering.capture import capture_hidden_states

    layer_list = list(range(lm.num_layers)) if layers is None else sorted(int(l) for l in layers)
    picks = {pos: [s.indices(pos) for s in spans] for pos in positions}
    out: dict = {pos: ([], []) for pos in positions}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(spans), desc=f"capturing ({', '.join(positions)})", unit="example")
    for start in range(0, len(spans), CAPTURE_CHUNK):
        chunk = list(range(start, min(start + CAPTURE_CHUNK, len(spans))))
        states = capture_hidden_states(lm, [spans[i].tokens for i in chunk], position="all", layers=layer_list)
        for i, st in zip(chunk, states):  # st: (L, T, D)
            for pos in positions:
                idx = picks[pos][i]
                out[pos][0].append(np.transpose(st[:, idx, :], (1, 0, 2)))
                out[pos][1].extend([i] * len(idx))
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    result = {}
    for pos, (parts, owner) in out.items():
        X = np.concatenate(parts, axis=0).astype(np.float32)
        if len(layer_list) != lm.num_layers:
            full = np.zeros((X.shape[0], lm.num_layers, X.shape[2]), dtype=np.float32)
            full[:, layer_list, :] = X
            X = full
        result[pos] = (X, np.asarray(owner, dtype=np.int64))
    return result
