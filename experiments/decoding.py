"""Greedy decoding of many steered rows at once, for studies.

The library's `steering.generation.generate` prefills each row alone (what a
server needs: rows arrive at different times). A study instead runs the same
few prompts under hundreds of interventions, so here rows whose prompts have
the same token length are prefilled together as one batch with one plain
KV cache: no padding, so every row computes exactly what it would alone.
Each row keeps its own interventions (RowSteering), and the first-token
log-probabilities come back too, for the KL between steered and unsteered.

The chat template's fixed opening (system prompt, role markers), common to
every row, is computed once per distinct steering and shared by the rows that
steer alike: every row computes what the server computes for it (a request's
steering covers its whole prompt, system turn included). A study has far fewer
steerings than rows, so this still halves the cost of a sweep on a 2-core CPU.
(Until 2026-11-30 the opening was computed once, unsteered, for every row; that
changed reflect's answers a lot: bench/green_red_sweep/README.md, prefix_check.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mlx_interp.steering.capture import ResidualHook
from mlx_interp.steering.hooks import layer_hooks
from mlx_interp.steering.interventions import Intervention, Phase, RowSteering

BATCH_ROWS = 48  # rows per forward pass; the prompts here are short, so this bounds memory well


@dataclass
class Decoded:
    text: str
    tokens: list[int]
    first_logprobs: np.ndarray  # (V,) float32 log-softmax of the first generated position


def chat_tokens(lm, question: str, system: str | None = None) -> list[int]:
    """The question as a user turn in lm's chat template, ready for the assistant's reply."""
    from mlx_interp.steering.capture import encode

    return encode(lm, question, chat=True, system=system)


def greedy_decode(
    lm,
    prompts: Sequence[Sequence[int]],
    interventions: Sequence[Sequence[Intervention]],
    max_tokens: int = 4,
    batch_rows: int = BATCH_ROWS,
    progress: bool = False,
    share_prefix: bool = True,
) -> list[Decoded]:
    """Greedy continuation of every prompt (token ids) under its own interventions."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    if len(prompts) != len(interventions):
        raise ValueError(f"{len(interventions)} intervention lists for {len(prompts)} prompts")
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    prefix_len = _common_prefix_length(prompts) if share_prefix else 0
    if prefix_len and not all(type(c).__name__ == "KVCache" for c in make_prompt_cache(lm.model)):
        prefix_len = 0  # other cache kinds (sliding windows, recurrent state) are not shared
    batches = [idx[s : s + batch_rows] for idx in by_length.values() for s in range(0, len(idx), batch_rows)]
    eos = set(lm.tokenizer.eos_token_ids)
    results: list[Decoded | None] = [None] * len(prompts)
    hook = ResidualHook()
    prefixes: dict[tuple, list] = {}  # a steering's identity -> the opening's KV cache computed under it

    def prefix_for(ivs: tuple) -> list:
        key = steering_identity(ivs)
        if key not in prefixes:
            cache = make_prompt_cache(lm.model)
            hook.steering = RowSteering.build([ivs], Phase.PROMPT)
            lm.model(mx.array([list(prompts[0][:prefix_len])]), cache=cache)
            # copies of the opening's positions only: a slice would keep each cache's 256-slot buffer alive
            kept = [(mx.contiguous(c.keys[..., :prefix_len, :]), mx.contiguous(c.values[..., :prefix_len, :])) for c in cache]
            mx.eval(kept)
            prefixes[key] = kept
        return prefixes[key]

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), desc="decoding", unit="row")
    with layer_hooks(lm.model, hook):
        for idx in batches:
            rows = [tuple(interventions[i]) for i in idx]
            cache = make_prompt_cache(lm.model)
            if prefix_len:
                shared = [prefix_for(ivs) for ivs in rows]
                for layer, mine in enumerate(cache):
                    mine.keys = mx.concatenate([s[layer][0] for s in shared], axis=0)
                    mine.values = mx.concatenate([s[layer][1] for s in shared], axis=0)
                    mine.offset = prefix_len
            hook.steering = RowSteering.build(rows, Phase.PROMPT)
            logits = lm.model(mx.array([list(prompts[i][prefix_len:]) for i in idx]), cache=cache)[:, -1, :].astype(mx.float32)
            first = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            mx.eval(first)
            first_np = np.array(first)
            hook.steering = RowSteering.build(rows, Phase.GENERATION)
            outs: list[list[int]] = [[] for _ in idx]
            done = [False] * len(idx)
            for step in range(max_tokens):
                toks = mx.argmax(logits, axis=-1).tolist()
                for r, t in enumerate(toks):
                    if done[r]:
                        continue
                    if t in eos:
                        done[r] = True
                    else:
                        outs[r].append(t)
                if all(done) or step == max_tokens - 1:
                    break
                # finished rows keep stepping (cheaper than re-batching); their tokens are ignored
                logits = lm.model(mx.array(toks)[:, None], cache=cache)[:, -1, :]
            for r, i in enumerate(idx):
                results[i] = Decoded(lm.tokenizer.decode(outs[r]), outs[r], first_np[r])
            if bar:
                bar.update(len(idx))
    if bar:
        bar.close()
    return results  # type: ignore[return-value]


def steering_identity(interventions) -> tuple:
    """What a prompt's steering does, by value: rows with equal identities compute the same prompt states.

    By value, not by object: a study builds a new Intervention per row, and a few dozen steerings
    over thousands of rows must share a few dozen openings. The directions are compared by content.
    """
    return tuple(
        (iv.key, iv.op.value, iv.alpha, iv.per_layer_alpha, iv.layers, iv.scope.value, iv.value,
         _digest(iv.directions), _digest(iv.midpoints))
        for iv in interventions if iv.active_in(Phase.PROMPT)
    )


def _digest(array) -> str | None:
    return None if array is None else hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def _common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt to run steered."""
    first = list(prompts[0])
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def kl_divergence(p_log: np.ndarray, q_log: np.ndarray) -> float:
    """KL(p || q) in nats from two log-probability vectors."""
    p_log = p_log.astype(np.float64)
    q_log = q_log.astype(np.float64)
    p = np.exp(p_log)
    return float(np.sum(p * (p_log - q_log)))
