"""Per-row token choice for a decode step: each row keeps its own sampling parameters and random key.

Everything here builds lazy mlx graphs; nothing converts the vocabulary to
Python. The common case (every row greedy, no penalties, no logprobs) is one
argmax over the batch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

from .protocol import SamplingParams  # noqa: F401  (defined with the other wire shapes; imported from here too)


class RowSampler:
    """The sampling state of one choice: its key, its bias vector and counts of the tokens it generated."""

    def __init__(self, params: SamplingParams, vocab_size: int, choice_index: int = 0):
        self.params = params
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        # Choices of one request share the seed but must differ: fold in the choice index.
        self.key = mx.random.key((seed + 1_000_003 * choice_index) % (2**63))
        self.bias = None
        if params.logit_bias:
            ids, values = zip(*params.logit_bias)
            self.bias = mx.zeros((vocab_size,), mx.float32).at[mx.array(ids)].add(mx.array(values, mx.float32))
        self.penalised = params.presence_penalty != 0.0 or params.frequency_penalty != 0.0
        self.counts = mx.zeros((vocab_size,), mx.float32) if self.penalised else None

    @property
    def plain(self) -> bool:
        """Greedy with nothing that changes the logits: can share the batch argmax."""
        return self.params.greedy and self.bias is None and not self.penalised

    def adjust(self, logits: mx.array) -> mx.array:
        """(V,) raw logits -> logits after logit_bias and penalties."""
        if self.bias is not None:
            logits = logits + self.bias
        if self.penalised:
            p = self.params
            logits = logits - p.presence_penalty * (self.counts > 0) - p.frequency_penalty * self.counts
        return logits

    def choose(self, logprobs: mx.array) -> mx.array:
        """(1, V) log-probabilities -> (1,) token."""
        p = self.params
        if p.greedy:
            return mx.argmax(logprobs, axis=-1)
        if 0.0 < p.top_p < 1.0:
            logprobs = apply_top_p(logprobs, p.top_p)
        if p.min_p > 0.0:
            logprobs = apply_min_p(logprobs, p.min_p)
        if p.top_k > 0 and p.top_k < logprobs.shape[-1]:
            logprobs = apply_top_k(logprobs, p.top_k)
        self.key, sub = mx.random.split(self.key)
        return mx.random.categorical(logprobs * (1.0 / p.temperature), key=sub)

    def observe(self, token: mx.array) -> None:
        """Record the chosen token (lazy) for presence/frequency penalties."""
        if self.penalised:
            self.counts = self.counts.at[token].add(1.0)


@dataclass
class Sampled:
    tokens: mx.array  # (B,) int
    logprob: mx.array | None = None  # (B,) log-probability of the chosen token
    top_ids: mx.array | None = None  # (B, k)
    top_logprobs: mx.array | None = None  # (B, k)

    def arrays(self) -> list:
        return [a for a in (self.tokens, self.logprob, self.top_ids, self.top_logprobs) if a is not None]

    def take(self, index: mx.array) -> "Sampled":
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Sampled(pick(self.tokens), pick(self.logprob), pick(self.top_ids), pick(self.top_logprobs))

    @staticmethod
    def concat(parts: list["Sampled"]) -> "Sampled":
        if len(parts) == 1:
            return parts[0]
        tokens = mx.concatenate([p.tokens for p in parts])
        if any(p.logprob is not None for p in parts):
            # Rows without logprobs get zeros: their reader never asks for them.
            B = [p.tokens.shape[0] for p in parts]
            k = max((p.top_ids.shape[1] for p in parts if p.top_ids is not None), default=0)
            lp = mx.concatenate([p.logprob if p.logprob is not None else mx.zeros((b,)) for p, b in zip(parts, B)])
            if k == 0:
                return Sampled(tokens, lp)
            ids = mx.concatenate([_pad_cols(p.top_ids, b, k, mx.int32) for p, b in zip(parts, B)])
            vals = mx.concatenate([_pad_cols(p.top_logprobs, b, k, mx.float32) for p, b in zip(parts, B)])
            return Sampled(tokens, lp, ids, vals)
        return Sampled(tokens)


def _pad_cols(a, rows: int, k: int, dtype):
    if a is None:
        return mx.zeros((rows, k), dtype)
    a = a.astype(dtype)
    if a.shape[1] < k:
        a = mx.concatenate([a, mx.zeros((rows, k - a.shape[1]), dtype)], axis=1)
    return a


def sample(logits: mx.array, samplers: list[RowSampler]) -> Sampled:
    """(B, V) logits, one sampler per row -> the next tokens (lazy), with logprobs if any row wants them."""
    logits = logits.astype(mx.float32)
    want_logprobs = any(s.params.logprobs for s in samplers)
    if all(s.plain for s in samplers) and not want_logprobs:
        return Sampled(mx.argmax(logits, axis=-1))
    if any(s.bias is not None or s.penalised for s in samplers):
        logits = mx.stack([s.adjust(logits[i]) for i, s in enumerate(samplers)])
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    if all(s.plain for s in samplers) or all(s.params.greedy for s in samplers):
        tokens = mx.argmax(logprobs, axis=-1)
    else:
        tokens = mx.concatenate([s.choose(logprobs[i : i + 1]) for i, s in enumerate(samplers)])
    for i, s in enumerate(samplers):
        s.observe(tokens[i])
    out = Sampled(tokens)
    if want_logprobs:
        out.logprob = mx.take_along_axis(logprobs, tokens[:, None], axis=-1)[:, 0]
        k = max(s.params.top_logprobs for s in samplers)
        if k > 0:
            k = min(k, logprobs.shape[-1])
            ids = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[:, :k]
            out.top_ids = ids
            out.top_logprobs = mx.take_along_axis(logprobs, ids, axis=-1)
    return out
