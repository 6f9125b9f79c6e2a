"""Capture the residual stream at every layer: during any forward pass, or for a list of texts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Sequence

import numpy as np

from .chat_template import render_chat, user_turn
from .hooks import layer_hooks
from .interventions import Intervention, Phase, RowSteering


class Position(str, Enum):
    LAST = "last"  # the last token's hidden state
    ALL = "all"  # every token's
    MEAN = "mean"  # mean over tokens


@dataclass
class Recorder:
    """Keeps each chosen layer's output of the current forward pass (after any steering)."""

    layers: frozenset[int] | None = None  # None: every layer
    last_only: bool = True
    outputs: dict[int, object] = field(default_factory=dict)

    def record(self, layer: int, h) -> None:
        if self.layers is None or layer in self.layers:
            # With one token per row (decode) keep the array as is: no slicing op per layer.
            self.outputs[layer] = h if (h.shape[1] == 1 or not self.last_only) else h[:, -1:, :]

    def last_token_stack(self):
        """(B, L, D) last-token states of the recorded layers, in layer order."""
        import mlx.core as mx

        outs = [self.outputs[k] for k in sorted(self.outputs)]
        # A decode step records one position per row already: no slice op per layer per token.
        return mx.concatenate([h if h.shape[1] == 1 else h[:, -1:, :] for h in outs], axis=1)

    def clear(self) -> None:
        self.outputs = {}


@dataclass
class ResidualHook:
    """The one hook installed on the layers: steering first, then recording of the result."""

    steering: RowSteering | None = None
    recorder: Recorder | None = None
    wants_block_input = True  # layer_hooks passes each block's input: range ops change the block's write

    def __call__(self, layer: int, h, block_input=None):
        if self.steering is not None:
            h = self.steering.apply(layer, h, block_input)
        if self.recorder is not None:
            self.recorder.record(layer, h)
        return h


def encode(lm, text: str | Sequence[int], chat: bool = False, system: str | None = None) -> list[int]:
    """Token ids for a prompt: raw text, chat-templated user turn, or ids passed through."""
    if not isinstance(text, str):
        return [int(t) for t in text]
    if chat:  # the same rendering as the server's (chat_template.render_chat)
        return render_chat(lm.tokenizer, user_turn(text, system), add_generation_prompt=True)
    return list(lm.tokenizer.encode(text))


def capture_hidden_states(
    lm,
    texts: Iterable[str | Sequence[int]],
    position: Position | str = Position.LAST,
    layers: Iterable[int] | None = None,
    interventions: Sequence[Intervention] = (),
    chat: bool = False,
    progress: bool = False,
):
    """Residual stream of every layer (or `layers`) for each text.

    Returns a float32 numpy array (N, L, D) for LAST and MEAN, and a list of
    (L, T_i, D) arrays for ALL. Texts of equal token length run as one batch,
    which needs no padding and so gives exactly the single-text result.
    """
    import mlx.core as mx

    position = Position(position)
    layer_list = sorted(layers) if layers is not None else list(range(lm.num_layers))
    token_lists = [encode(lm, t, chat=chat) for t in texts]
    if any(len(t) == 0 for t in token_lists):
        raise ValueError("cannot capture an empty prompt")
    by_length: dict[int, list[int]] = {}
    for i, toks in enumerate(token_lists):
        by_length.setdefault(len(toks), []).append(i)
    results: list = [None] * len(token_lists)
    recorder = Recorder(layers=frozenset(layer_list), last_only=position is Position.LAST)
    hook = ResidualHook(recorder=recorder)
    groups = list(by_length.values())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(token_lists), desc="capturing", unit="text")
    max_batch = 16
    with layer_hooks(lm.model, hook):
        for group in groups:
            for start in range(0, len(group), max_batch):
                idx = group[start : start + max_batch]
                hook.steering = RowSteering.build([list(interventions)] * len(idx), Phase.PROMPT)
                recorder.clear()
                lm.model(mx.array([token_lists[i] for i in idx]))
                stacked = mx.stack([recorder.outputs[l] for l in layer_list], axis=1)  # (B, L, T, D)
                if position is Position.MEAN:
                    stacked = stacked.astype(mx.float32).mean(axis=2)
                elif position is Position.LAST:
                    stacked = stacked[:, :, -1, :]
                arr = np.array(stacked.astype(mx.float32))
                for j, i in enumerate(idx):
                    results[i] = arr[j]
                if bar:
                    bar.update(len(idx))
    if bar:
        bar.close()
    if position is Position.ALL:
        return results
    return np.stack(results).astype(np.float32)
