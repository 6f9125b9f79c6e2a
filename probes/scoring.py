"""Score every probe at every layer in one batched matmul: what the server runs each decode step.

Each probe's standardisation is folded into its linear map once, at build
time:  ((h - m) / s) . w + b  =  h . (w / s) + (b - sum(m * w / s)).
The folded weights of all P probes are stacked into W (L, D, P), so the
residual stream of a batch, (B, L, D), becomes logits (B, L, P) through a
single (L, B, D) @ (L, D, P) matmul. Layers a probe has no weights for hold
zeros there and are masked to NaN in `scores`.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import numpy as np

from ..steering.compiled_step import compile_enabled
from .probe import Probe


def _scores(hidden, W, b, mask, nan):
    per_layer = mx.matmul(hidden.astype(W.dtype).transpose(1, 0, 2), W)  # (L, B, P)
    return mx.where(mask, mx.sigmoid(per_layer.transpose(1, 0, 2).astype(mx.float32) + b), nan)


# The bank is scored every decode step. Uncompiled that is eight array operations, each one host
# launch; on a GPU, where one stream's step is bound by launches, they cost ~2% of the step. Compiled
# (shapeless: one trace serves every batch size and prompt length) they are a matmul and one fused
# kernel, with results identical to the uncompiled expression (tests/probes/test_probes_scoring.py).
_scores_compiled = mx.compile(_scores, shapeless=True)


class ProbeBank:
    def __init__(self, probes: Sequence[Probe], num_layers: int, hidden_size: int, dtype=mx.float32):
        probes = list(probes)
        if not probes:
            raise ValueError("a ProbeBank needs at least one probe")
        names = [p.name for p in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate probe names in {names}")
        L, D, P = int(num_layers), int(hidden_size), len(probes)
        # Fold in float64 so tiny scales do not lose precision before the cast.
        W = np.zeros((L, D, P), dtype=np.float64)
        b = np.zeros((L, P), dtype=np.float64)
        mask = np.zeros((L, P), dtype=bool)
        for j, probe in enumerate(probes):
            if probe.hidden_size != D:
                raise ValueError(f"probe {probe.name} has hidden size {probe.hidden_size}, the model {D}")
            for k, layer in enumerate(probe.layers):
                if not 0 <= layer < L:
                    raise ValueError(f"probe {probe.name} reads layer {layer}, the model has {L} layers")
                w = probe.weights[k].astype(np.float64) / probe.scale[k].astype(np.float64)
                W[layer, :, j] = w
                b[layer, j] = float(probe.bias[k]) - float(np.dot(probe.mean[k].astype(np.float64), w))
                mask[layer, j] = True
        self.names: list[str] = names
        self.best_layers: list[int] = [p.best_layer for p in probes]
        self.thresholds: list[float] = [p.threshold for p in probes]
        self.num_layers, self.hidden_size, self.dtype = L, D, dtype
        self.W = mx.array(W.astype(np.float32)).astype(dtype)  # (L, D, P)
        self.b = mx.array(b.astype(np.float32))  # (L, P), added in float32
        self.mask = mx.array(mask)  # (L, P)
        self._best = mx.array(np.array(self.best_layers, dtype=np.int32))
        self._nan = mx.array(float("nan"))  # made once: scores() runs every decode step
        self._index = {n: i for i, n in enumerate(names)}
        self.layers_used: list[int] = sorted(int(l) for l in np.flatnonzero(mask.any(axis=1)))

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(name) from None

    def logits(self, hidden: mx.array) -> mx.array:
        """(B, L, D) residual states -> (B, L, P) logits, lazily, in one matmul."""
        if hidden.ndim != 3 or hidden.shape[1] != self.num_layers or hidden.shape[2] != self.hidden_size:
            raise ValueError(f"expected hidden (B, {self.num_layers}, {self.hidden_size}), got {tuple(hidden.shape)}")
        per_layer = mx.matmul(hidden.astype(self.dtype).transpose(1, 0, 2), self.W)  # (L, B, P)
        return per_layer.transpose(1, 0, 2).astype(mx.float32) + self.b

    def scores(self, hidden: mx.array) -> mx.array:
        """(B, L, D) -> (B, L, P) probabilities; NaN where a probe has no weights for the layer."""
        if hidden.ndim != 3 or hidden.shape[1] != self.num_layers or hidden.shape[2] != self.hidden_size:
            raise ValueError(f"expected hidden (B, {self.num_layers}, {self.hidden_size}), got {tuple(hidden.shape)}")
        score = _scores_compiled if compile_enabled() else _scores
        return score(hidden, self.W, self.b, self.mask, self._nan)

    def best_scores(self, scores: mx.array) -> mx.array:
        """(B, L, P) scores -> (B, P): each probe read at its own best layer."""
        idx = mx.broadcast_to(self._best[None, None, :], (scores.shape[0], 1, len(self.names)))
        return mx.take_along_axis(scores, idx, axis=1)[:, 0, :]
