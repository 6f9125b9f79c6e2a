"""Batched, per-row-steered decoding: the loop the library and the server share.

Each row is prefilled alone (so its prompt sees exactly its own interventions
and a cache of its own), then joins a batch whose cache is mlx-lm's
BatchKVCache. Every decode step runs all rows in one forward pass; the hook
applies each row's steering and records each row's residual stream.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Sequence

from .compiled_step import CompiledDecode, compile_enabled
from .compiled_step import supports as supports_compiled
from .capture import Recorder, ResidualHook
from .hooks import layer_hooks
from .interventions import Intervention, Phase, RowSteering
from .prompt_logprobs import PromptLogprobs, PromptScorer

if TYPE_CHECKING:
    import mlx.core as mx

PREFILL_CHUNK = 512  # tokens per prompt forward pass: bounds activation memory on long prompts


@dataclass
class Prefill:
    logits: mx.array  # (V,) at the last prompt token
    cache: list  # the row's own mlx-lm cache
    hidden_last: mx.array | None  # (L, D) last prompt token, steered, if captured
    hidden_all: object | None = None  # (T, L, D) every processed prompt token, if asked (or what `reduce` made of it)
    prompt_logprobs: PromptLogprobs | None = None  # each prompt token's log-probability, if asked


@dataclass
class Row:
    uid: object
    interventions: tuple[Intervention, ...]


@dataclass
class PrefillTask:
    """A prompt being prefilled chunk by chunk; the batch's own steering is restored after every chunk."""

    batch: "DecodeBatch"
    remaining: list[int]
    steering: RowSteering
    cache: list
    capture_all: bool
    chunk: int = PREFILL_CHUNK
    # With capture_all: maps each chunk's (t, L, D) states to what is kept of them, so a long prompt
    # need not hold every token's every layer (e.g. to probe scores). None keeps the states.
    reduce: object = None
    logits: object = None
    chunks_all: list = field(default_factory=list)
    scorer: PromptScorer | None = None  # scores the prompt's own tokens from every chunk's logits, if asked

    @property
    def tokens_left(self) -> int:
        return len(self.remaining)

    def advance(self, limit: int | None = None) -> Prefill | None:
        """Run the next chunk (at most `limit` tokens); returns the Prefill once the whole prompt has been read."""
        import mlx.core as mx

        hook = self.batch.hook
        size = self.chunk if limit is None else max(1, min(self.chunk, limit))
        piece, self.remaining = self.remaining[:size], self.remaining[size:]
        hook.steering = self.steering
        recorder = hook.recorder
        recorder.last_only = not self.capture_all
        try:  # a failed prompt must not leave its steering on the batch's next step
            recorder.clear()
            out = self.batch.lm.model(mx.array([piece]), cache=self.cache)
            self.logits = out[0, -1]
            if self.scorer is not None:
                self.scorer.feed(out[0])
            if self.capture_all and recorder.outputs:
                states = self.batch._stack_all()
                self.chunks_all.append(states if self.reduce is None else self.reduce(states))
            mx.eval(self.logits, [c.state for c in self.cache], list(recorder.outputs.values()))
            if self.remaining:
                return None
            hidden_last = recorder.last_token_stack()[0] if recorder.outputs else None
        finally:
            recorder.last_only = True
            hook.steering = self.batch._steering
        hidden_all = None
        if self.chunks_all:
            first = self.chunks_all[0]
            hidden_all = mx.concatenate(self.chunks_all, axis=0) if isinstance(first, mx.array) else _concat(self.chunks_all)
        scored = self.scorer.result() if self.scorer is not None else None
        return Prefill(logits=self.logits, cache=self.cache, hidden_last=hidden_last, hidden_all=hidden_all,
                       prompt_logprobs=scored)


def _concat(parts):
    import numpy as np

    return np.concatenate(parts, axis=0)


@contextmanager
def steering_session(lm, capture_layers: Sequence[int] | None = None, compiled: bool | None = None) -> Iterator["DecodeBatch"]:
    """Install the hook once and hand out a DecodeBatch that drives it; removes the hook on exit.

    `compiled` decodes through one compiled step (steering/compiled_step.py); None follows MLX_INTERP_COMPILE.
    """
    if compiled is None:
        compiled = compile_enabled()
    recorder = Recorder(layers=None if capture_layers is None else frozenset(capture_layers))
    hook = ResidualHook(recorder=recorder)
    with layer_hooks(lm.model, hook, first_index=getattr(lm, "first_layer", 0)):
        # A model split across ranks decodes uncompiled: its forward pass sends and receives.
        compiled = compiled and getattr(lm, "shard", None) is None
        yield DecodeBatch(lm, hook, compiled=CompiledDecode(lm.model, hook) if compiled else None)


@dataclass
class DecodeBatch:
    lm: object
    hook: ResidualHook
    rows: list[Row] = field(default_factory=list)
    cache: list | None = None  # batch caches, one per layer
    _steering: RowSteering | None = None
    compiled: CompiledDecode | None = None  # the compiled decode step; None decodes uncompiled
    _compilable: bool = False  # the batch's caches can take the compiled step (checked when rows change)

    # -- prompts -------------------------------------------------------------
    def start_prefill(
        self,
        tokens: Sequence[int],
        interventions: Sequence[Intervention] = (),
        cache: list | None = None,
        cached_tokens: int = 0,
        capture_all: bool = False,
        chunk: int = PREFILL_CHUNK,
        prompt_logprobs: int | None = None,
    ) -> "PrefillTask":
        """A prompt to run alone, one chunk per `advance()`, so decode steps can run in between.

        `prompt_logprobs=k` also scores every prompt token (with its top k alternatives); that
        needs the logits of every position, so the whole prompt must run (no cached prefix).
        """
        from mlx_lm.models.cache import make_prompt_cache

        if not tokens:
            raise ValueError("empty prompt")
        if chunk < 1:
            raise ValueError(f"prefill chunk must be positive, got {chunk}")
        if cache is None:
            cache, cached_tokens = make_prompt_cache(self.lm.model), 0
        if cached_tokens >= len(tokens):  # whole prompt cached: recompute the last token for its logits
            for c in cache:
                c.trim(cached_tokens - len(tokens) + 1)
            cached_tokens = len(tokens) - 1
        scorer = None
        if prompt_logprobs is not None:
            if cached_tokens:
                raise ValueError("prompt log-probabilities need the whole prompt run: no cached prefix")
            scorer = PromptScorer(tokens, prompt_logprobs)
        steering = RowSteering.build([tuple(interventions)], Phase.PROMPT)
        return PrefillTask(self, list(tokens[cached_tokens:]), steering, cache, capture_all, chunk, scorer=scorer)

    def prefill(
        self,
        tokens: Sequence[int],
        interventions: Sequence[Intervention] = (),
        cache: list | None = None,
        cached_tokens: int = 0,
        capture_all: bool = False,
        prompt_logprobs: int | None = None,
    ) -> Prefill:
        """Run a prompt alone, to the end. `cache` may hold the first `cached_tokens` already (a reused prefix)."""
        task = self.start_prefill(tokens, interventions, cache, cached_tokens, capture_all, prompt_logprobs=prompt_logprobs)
        while True:
            done = task.advance()
            if done is not None:
                return done

    def _stack_all(self):
        import mlx.core as mx

        outs = self.hook.recorder.outputs
        return mx.stack([outs[k][0] for k in sorted(outs)], axis=1)  # (T, L, D)

    # -- batch membership -----------------------------------------------------
    def add(self, uid, prefill: Prefill, interventions: Sequence[Intervention] = ()) -> None:
        # Each layer's cache is batched by its own class (KVCache -> BatchKVCache,
        # RotatingKVCache -> BatchRotatingKVCache, ...), then joins the batch.
        merged = []
        for c in prefill.cache:
            if not hasattr(type(c), "merge"):
                raise ValueError(f"{type(c).__name__} caches cannot be batched")
            merged.append(type(c).merge([c]))
        if not self.rows:
            self.cache = merged
        else:
            for mine, theirs in zip(self.cache, merged):
                mine.extend(theirs)
        self.rows.append(Row(uid, tuple(interventions)))
        self._compilable = self.compiled is not None and supports_compiled(self.cache)
        self._rebuild_steering()

    def remove(self, uids) -> None:
        uids = set(uids)
        keep = [i for i, r in enumerate(self.rows) if r.uid not in uids]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = None
        else:
            for c in self.cache:
                c.filter(keep)
        self._compilable = self.compiled is not None and supports_compiled(self.cache)
        self._rebuild_steering()

    def set_interventions(self, uid, interventions: Sequence[Intervention]) -> None:
        """Change one running row's steering from its next step on; the other rows keep theirs exactly."""
        for i, r in enumerate(self.rows):
            if r.uid == uid:
                self.rows[i] = Row(uid, tuple(interventions))
                self._rebuild_steering()
                return
        raise KeyError(f"no row {uid!r} in the batch")

    def interventions_of(self, uid) -> tuple[Intervention, ...]:
        for r in self.rows:
            if r.uid == uid:
                return r.interventions
        raise KeyError(f"no row {uid!r} in the batch")

    def warm_up(self, token: int = 0) -> None:
        """Trace the compiled step for one plain and one probed row now, not on the first request.

        On mlx's CUDA backend the first trace also JIT-compiles its fused kernels: ~20 s for a
        7B-shape model on an H200, which would otherwise fall on the first client's first token.
        On CPU it costs tens to hundreds of milliseconds (kernels are cached on disk).
        """
        from . import decode_attention

        if self.compiled is None or self.rows:
            return
        try:
            self._trace_both(token)
        except Exception as exc:  # noqa: BLE001 - the CUDA attention kernel is the one part that may not build here
            if decode_attention.mode() == "off":
                raise
            decode_attention.give_up(f"{type(exc).__name__}: {exc}")
            warnings.warn(f"the decode attention kernel failed here ({decode_attention.failure()}); "
                          f"decoding with mlx's masked attention instead", RuntimeWarning, stacklevel=2)
            self.compiled = CompiledDecode(self.compiled.model, self.hook)  # no trace that holds the kernel survives
            self._trace_both(token)

    def _trace_both(self, token: int) -> None:
        import mlx.core as mx

        sentinel = object()
        self.add(sentinel, self.prefill([token]))
        try:
            for capture in (False, True):
                logits, hidden = self.step([token], capture=capture)
                mx.eval(logits, hidden if hidden is not None else [])
        finally:
            self.remove([sentinel])

    def _rebuild_steering(self) -> None:
        self._steering = RowSteering.build([r.interventions for r in self.rows], Phase.GENERATION) if self.rows else None
        self.hook.steering = self._steering

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def uids(self) -> list:
        return [r.uid for r in self.rows]

    # -- decoding ---------------------------------------------------------------
    def step(self, next_tokens: Sequence[int], capture: bool = True):
        """Feed one token per row; returns (logits (B, V), hidden (B, L, D) or None), both lazy."""
        import mlx.core as mx

        if len(next_tokens) != len(self.rows):
            raise ValueError(f"{len(next_tokens)} tokens for {len(self.rows)} rows")
        self.hook.steering = self._steering
        recorder = self.hook.recorder if capture else None
        saved = self.hook.recorder
        self.hook.recorder = recorder
        try:
            if self._compilable:
                return self.compiled.step(self.cache, mx.array(next_tokens), self._steering, capture)
            if recorder is not None:
                recorder.clear()
            logits = self.lm.model(mx.array(next_tokens)[:, None], cache=self.cache)[:, -1, :]
            hidden = recorder.last_token_stack() if recorder is not None and recorder.outputs else None
        finally:
            self.hook.recorder = saved
        return logits, hidden


@dataclass
class Generation:
    text: str
    tokens: list[int]
    finish_reason: str  # "stop" or "length"


def generate(
    lm,
    prompts: Sequence[str | Sequence[int]],
    interventions: Sequence[Sequence[Intervention]] | None = None,
    max_tokens: int = 64,
    temperature: float = 0.0,
    chat: bool = True,
    seed: int | None = None,
) -> list[Generation]:
    """Generate for several prompts at once, each row with its own interventions."""
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    from .capture import encode

    if seed is not None:
        mx.random.seed(seed)
    rows = list(interventions) if interventions is not None else [()] * len(prompts)
    if len(rows) != len(prompts):
        raise ValueError(f"{len(rows)} intervention lists for {len(prompts)} prompts")
    sampler = make_sampler(temp=temperature)
    eos = set(lm.tokenizer.eos_token_ids)
    outputs: list[list[int]] = [[] for _ in prompts]
    finish = ["length"] * len(prompts)
    with steering_session(lm, capture_layers=()) as batch:
        pending = []
        for i, (prompt, ivs) in enumerate(zip(prompts, rows)):
            pre = batch.prefill(encode(lm, prompt, chat=chat), ivs)
            batch.add(i, pre, ivs)
            pending.append(pre.logits)
        logits = mx.stack(pending)
        for _ in range(max_tokens):
            toks = sampler(logits).tolist()
            live = []
            for uid, tok in zip(batch.uids, toks):
                if tok in eos:
                    finish[uid] = "stop"
                else:
                    outputs[uid].append(tok)
                    if len(outputs[uid]) < max_tokens:
                        live.append((uid, tok))
            batch.remove(set(batch.uids) - {uid for uid, _ in live})
            if not live:
                break
            logits, _ = batch.step([tok for _, tok in live], capture=False)
    return [Generation(lm.tokenizer.decode(o), o, f) for o, f in zip(outputs, finish)]
