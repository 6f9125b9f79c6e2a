"""One decode step as one compiled mlx function: the host builds no per-layer graph per token.

An uncompiled decode step rebuilds the whole model's graph in Python every token (every layer,
every hook, every steering term). On a GPU that host work, not the device, bounds one stream: a
7B-shape model spent ~7 ms per token building and launching a graph the device ran in less. Here
`mx.compile` traces the step once per batch shape and replays it afterwards.

What a trace may not bake in is anything that changes between steps. So:
- The KV caches stay mlx-lm's `BatchKVCache` objects (joining, leaving and trimming rows work as
  before), but the step reads their buffers and writes the new token at a position given as an
  array (`mx.slice_update`), and attends over the whole buffer with a mask that hides the slots
  past the position and each row's left padding: shapes change only when the buffer grows (every
  256 tokens) or the batch does.
- The per-row steering terms are inputs, not constants: a trace is kept per steering *structure*
  (which layers have which kinds of terms), and a row joining, leaving or being re-steered by a
  guard feeds new arrays into the same trace.
- On mlx's CUDA backend the masked attention over the buffer is one kernel per layer
  (steering/decode_attention.py) instead of mlx's unfused fallback.
The uncompiled step stays the reference: compiled and uncompiled decode give the same tokens on
CPU (tests/steering/test_compiled_step.py; on a GPU in bfloat16 the rounding differs, so near-ties
can go the other way), and `MLX_INTERP_COMPILE=0` turns this path off.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

COMPILE_ENV = "MLX_INTERP_COMPILE"


def compile_enabled() -> bool:
    """On unless MLX_INTERP_COMPILE is 0/false/no/off."""
    return os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def supports(cache) -> bool:
    """Whether a batch's caches can take the compiled step: plain batched KV caches, nothing else."""
    from mlx_lm.models.cache import BatchKVCache

    return bool(cache) and all(
        type(c) is BatchKVCache and c.keys is not None and getattr(c, "_right_padding", None) is None for c in cache
    )


class _StepCache:
    """Stands in for one layer's BatchKVCache inside the traced step (decode: one token per row)."""

    def __init__(self, keys, values, idx, offset, left_padding, masks_made: list):
        self.keys, self.values = keys, values
        self.idx = idx  # () int32: where this token's key and value go
        self.offset = offset  # (B,) the rows' positions, as BatchKVCache keeps them (rope reads it)
        self.left_padding = left_padding
        self.masks_made = masks_made  # shared by the step's caches: decode_attention knows its masks by identity

    def update_and_fetch(self, keys, values):
        import mlx.core as mx

        if keys.shape[2] != 1:
            raise ValueError("the compiled step decodes one token per row")
        self.keys = mx.slice_update(self.keys, keys, self.idx.reshape(1), axes=(2,))
        self.values = mx.slice_update(self.values, values, self.idx.reshape(1), axes=(2,))
        return self.keys, self.values

    def make_mask(self, N: int, return_array: bool = False, window_size=None, **_):
        import mlx.core as mx

        if window_size is not None:
            raise ValueError("sliding-window attention is not compiled")
        slots = mx.arange(self.keys.shape[2])
        # BatchKVCache's own mask for one new token: the slots written so far and this one,
        # from each row's first real token on.
        mask = (slots <= self.idx) & (slots >= self.left_padding[:, None, None, None])
        self.masks_made.append(mask)
        return mask


def _flatten_steering(steering) -> tuple[tuple, list]:
    """(structure key, the arrays) of a RowSteering; the key names everything a trace bakes in."""
    if steering is None:
        return (), []
    key, arrays = [], []
    for layer in sorted(steering.terms):
        for term in steering.terms[layer]:
            fields = [f.name for f in dataclasses.fields(term) if not f.name.startswith("_")]
            present = tuple(getattr(term, name) is not None for name in fields)
            key.append((layer, type(term).__name__, present))
            arrays.extend(getattr(term, name) for name in fields if getattr(term, name) is not None)
    return (steering.batch_size, steering.needs_block_input, tuple(key)), arrays


def _rebuild_steering(template, arrays: list):
    """A copy of `template` whose terms use `arrays` (the traced inputs) in _flatten_steering's order."""
    if template is None:
        return None
    it = iter(arrays)
    terms: dict[int, list] = {}
    for layer in sorted(template.terms):
        for term in template.terms[layer]:
            fields = [f.name for f in dataclasses.fields(term) if not f.name.startswith("_")]
            values = {name: (None if getattr(term, name) is None else next(it)) for name in fields}
            terms.setdefault(layer, []).append(type(term)(**values))
    return dataclasses.replace(template, terms=terms)


class CompiledDecode:
    """The compiled decode step of one DecodeBatch's model and hook; traces are kept per steering structure."""

    def __init__(self, model, hook):
        self.model, self.hook = model, hook
        self._fns: dict[tuple, Any] = {}
        self._flat: tuple[Any, tuple, list] = (None, (), [])  # (steering, key, arrays): rebuilt only when the batch's steering is

    def step(self, cache: list, tokens, steering, capture: bool):
        """(logits (B, V), hidden (B, L, D) or None), lazy; advances `cache` by one token per row."""
        import mlx.core as mx

        for c in cache:
            _make_room(c)
        idx = mx.array(cache[0]._idx, dtype=mx.int32)
        offset, left = cache[0].offset, cache[0].left_padding
        if self._flat[0] is not steering:  # a RowSteering is rebuilt, never changed, when rows or their steering change
            self._flat = (steering, *_flatten_steering(steering))
        _, key, steer_arrays = self._flat
        recorder = self.hook.recorder if capture else None
        if recorder is not None and recorder.layers is not None and not recorder.layers:
            recorder = None  # a session that records no layer: no hidden states, as uncompiled
        fkey = (key, "plain" if recorder is None else ("capture", recorder.layers))
        fn = self._fns.get(fkey)
        if fn is None:
            fn = self._fns[fkey] = mx.compile(self._traced(steering, recorder))
        kv = [a for c in cache for a in (c.keys, c.values)]
        outs = fn(tokens, idx, offset, left, kv, steer_arrays)
        logits, new_kv = outs[0], outs[1]
        new_offset = offset + 1
        for i, c in enumerate(cache):
            c.keys, c.values = new_kv[2 * i], new_kv[2 * i + 1]
            c.offset = new_offset
            c._idx += 1
        return logits, (outs[2] if recorder is not None else None)

    def _traced(self, template, recorder):
        from . import decode_attention

        model, hook = self.model, self.hook

        def step(tokens, idx, offset, left, kv, steer_arrays):
            masks: list = []
            caches = [_StepCache(kv[2 * i], kv[2 * i + 1], idx, offset, left, masks) for i in range(len(kv) // 2)]
            saved = hook.steering, hook.recorder
            hook.steering = _rebuild_steering(template, steer_arrays)
            hook.recorder = recorder
            try:
                if recorder is not None:
                    recorder.clear()
                with decode_attention.for_step_masks(masks, idx, left):
                    logits = model(tokens[:, None], cache=caches)[:, -1, :]
                new_kv = [a for c in caches for a in (c.keys, c.values)]
                if recorder is None:
                    return logits, new_kv
                hidden = recorder.last_token_stack()
                recorder.clear()  # traced arrays must not outlive the trace
                return logits, new_kv, hidden
            finally:
                hook.steering, hook.recorder = saved

        return step


def _make_room(c) -> None:
    """Grow a BatchKVCache's buffers by its step when the next token would not fit (as it does itself)."""
    import mlx.core as mx

    if c._idx < c.keys.shape[2]:
        return
    B, H, _, Dk = c.keys.shape
    Dv = c.values.shape[3]
    keys, values = c.keys[..., : c._idx, :], c.values[..., : c._idx, :]
    c.keys = mx.concatenate([keys, mx.zeros((B, H, c.step, Dk), keys.dtype)], axis=2)
    c.values = mx.concatenate([values, mx.zeros((B, H, c.step, Dv), values.dtype)], axis=2)
