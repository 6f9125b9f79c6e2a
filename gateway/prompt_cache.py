"""Prompt KV caches kept between requests, reused for the longest shared prefix.

A cache is only valid for the steering its prompt was processed with, so the
key pairs the prompt-phase steering with the tokens.
"""

from __future__ import annotations

from collections import OrderedDict

from mlx_interp.steering.interventions import Phase


def prompt_key(interventions) -> tuple:
    """Identity of the steering a prompt is processed with: caches are shared only between equal keys."""
    return tuple(
        (iv.key, iv.op.value, iv.alpha, iv.per_layer_alpha, iv.layers, iv.value) for iv in interventions if iv.active_in(Phase.PROMPT)
    )


class PromptCache:
    """LRU of prompt KV caches keyed by (prompt steering, tokens); reused for the longest shared prefix."""

    def __init__(self, entries: int):
        self.entries = entries
        self._store: OrderedDict[tuple, list] = OrderedDict()

    def lookup(self, steer_key: tuple, tokens) -> tuple[list | None, int]:
        best, best_len = None, 0
        for key, cache in self._store.items():
            if key[0] != steer_key:
                continue
            shared = _common_prefix(key[1], tokens)
            if shared > best_len:
                best, best_len = key, shared
        if best is None:
            return None, 0
        self._store.move_to_end(best)
        cached = self._store[best]
        return [copy_prefix(c, best_len) for c in cached], best_len

    def store(self, steer_key: tuple, tokens, cache: list) -> None:
        from mlx_lm.models.cache import KVCache

        if self.entries <= 0 or not all(type(c) is KVCache for c in cache):
            return  # sliding-window and recurrent caches cannot be trimmed back to a prefix
        key = (steer_key, tuple(tokens))
        self._store[key] = cache
        self._store.move_to_end(key)
        while len(self._store) > self.entries:
            self._store.popitem(last=False)


def _common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def copy_prefix(c, length: int):
    """A KVCache holding the first `length` positions of c, sharing nothing writable with it."""
    from mlx_lm.models.cache import KVCache

    out = KVCache()
    out.keys = c.keys[..., :length, :]
    out.values = c.values[..., :length, :]
    out.offset = length
    return out
