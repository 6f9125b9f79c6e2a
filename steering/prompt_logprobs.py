"""Log-probabilities of a prompt's own tokens, read from the logits its prefill computes anyway.

Evaluation harnesses score text this way (OpenAI's legacy `echo` + `logprobs`):
the log-probability of prompt token t is read from the logits at position t-1,
so the first token has none. Prefill runs a prompt in chunks; the last logits
of one chunk score the first token of the next, so the scorer carries them over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class PromptLogprobs:
    """Per prompt token: its log-probability (None for the first) and the top-k alternatives."""

    token_logprobs: list = field(default_factory=list)  # float | None
    top: list = field(default_factory=list)  # [(token_id, logprob)] sorted best first; None for the first token


class PromptScorer:
    """Feed every prefill chunk's logits in order; `result()` scores the whole prompt."""

    def __init__(self, tokens: Sequence[int], top_k: int):
        self.tokens = list(tokens)
        self.top_k = max(0, int(top_k))
        self._done = 0  # prompt positions whose logits have been seen
        self._out = PromptLogprobs([None], [None])

    def feed(self, logits) -> None:
        """logits: (T, V) for the next T prompt positions."""
        import mlx.core as mx

        T = logits.shape[0]
        start = self._done
        self._done += T
        # position p scores token p+1; the prompt's last position scores the first generated token, not ours
        n = min(T, len(self.tokens) - 1 - start)
        if n <= 0:
            return
        logits = logits[:n].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        targets = mx.array(self.tokens[start + 1 : start + 1 + n])[:, None]
        own = mx.take_along_axis(logprobs, targets, axis=-1)[:, 0]
        arrays = [own]
        if self.top_k:
            k = min(self.top_k, logprobs.shape[-1])
            ids = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[:, :k]
            arrays += [ids, mx.take_along_axis(logprobs, ids, axis=-1)]
        mx.eval(arrays)
        self._out.token_logprobs.extend(own.tolist())
        if self.top_k:
            for row_ids, row_lps in zip(arrays[1].tolist(), arrays[2].tolist()):
                self._out.top.append(sorted(zip(row_ids, row_lps), key=lambda p: -p[1]))
        else:
            self._out.top.extend([] for _ in range(n))

    def result(self) -> PromptLogprobs:
        if self._done != len(self.tokens):
            raise ValueError(f"scored {self._done} of {len(self.tokens)} prompt positions")
        return self._out
