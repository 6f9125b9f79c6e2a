"""The model thread: continuous batching over steering.generation.DecodeBatch.

One thread owns the model. It installs the steering hook once
(steering_session) and keeps it for the server's life. Requests arrive on a
thread-safe queue; results go back to the event loop with
loop.call_soon_threadsafe, one call per request per decode step.

Each iteration:
  1. launch the next decode step for every running row (lazy, async_eval'd),
  2. read the previous step's tokens into Python while that runs,
  3. drop rows that finished or whose client went away,
  4. prefill waiting requests and join them to the batch.
So the Python work of step t overlaps the forward pass of step t+1, as in
mlx_lm.generate_step. A row that finished in step t costs one wasted row in
step t+1.

The pieces around the loop have modules of their own: events.py (what goes
back to the event loop), rows.py (per-row output: detokenizing, stops,
logprob text), prompt_cache.py and probe_upkeep.py.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from mlx_interp.steering.generation import steering_session

from . import constraints
from .errors import QueueFull, Unavailable, as_api_error
from .events import ChoiceEnd, Failed, Job, PromptRead
from .guards import RowGuard, judge_before_step, rerun_prompt
from .limits import Limits
from .probe_upkeep import BankKeeper
from .prompt_cache import PromptCache, prompt_key
from .protocol import ChoiceSpec
from .rows import RowState, TokenTexts
from .sampling import RowSampler, Sampled, sample
from .stops import StopMatcher

log = logging.getLogger("mlx_interp.gateway")

RETRY_AFTER_S = 1  # what a 429 tells the client to wait


@dataclass
class Part:
    """Outputs of one forward pass for some consecutive rows of the batch."""

    rows: list
    sampled: Sampled | None  # None until a batch with constrained rows has its masks (see _sample_constrained)
    scores: object = None  # mx (b, L, P) readings of the tokens fed in that pass
    bank: object = None
    logits: object = None  # kept only while sampling waits for grammar masks
    _host: object = None  # scores as numpy, read once

    def host_scores(self):
        if self._host is None and self.scores is not None:
            self._host = np.array(self.scores)
        return self._host

    def take(self, keep: list[int]) -> "Part":
        idx = mx.array(keep)
        scores = None if self.scores is None else self.scores[idx]
        return Part([self.rows[i] for i in keep], self.sampled.take(idx), scores, self.bank)


# -- the engine ------------------------------------------------------------------------------


class Engine:
    def __init__(self, lm, limits: Limits):
        self.lm = lm
        self.limits = limits
        self.vocab_size = _vocab_size(lm)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[Job] = deque()
        self._queued = 0  # submitted, not yet admitted (guarded by _lock)
        self._lock = threading.Lock()
        self._eos = frozenset(lm.tokenizer.eos_token_ids)
        self._prompt_cache = PromptCache(limits.prompt_cache_entries)
        self._probes = BankKeeper(lm.num_layers, lm.hidden_size)
        self._texts = TokenTexts(lm.tokenizer)
        self._grammars = constraints.GrammarEngine(lm.tokenizer, self.vocab_size)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="mlx-interp-model", daemon=True)
        self.batch_size = 0  # rows decoding now (read by /metrics)
        self.steps = 0

    # -- called from the event loop ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise RuntimeError(f"model thread failed to start: {self._failure}")

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self._queued

    def submit(self, job: Job) -> None:
        if not self.alive:
            raise Unavailable("the model thread is not running")
        with self._lock:
            if self._queued >= self.limits.max_queue:
                raise QueueFull(
                    f"the request queue is full ({self.limits.max_queue} waiting, --max-queue); retry shortly",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            self._queued += 1
        self._inbox.put(job)

    # -- the model thread ---------------------------------------------------------------------
    def _main(self) -> None:
        try:
            with steering_session(self.lm, capture_layers=None) as batch:
                self._batch = batch
                self._ready.set()
                self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            self._failure = exc
            log.exception("model thread stopped")
        finally:
            self._ready.set()

    def _loop(self) -> None:
        batch = self._batch
        cur: list[Part] | None = None
        while True:
            if not self._pull(block=cur is None and not self._waiting):
                return
            try:
                if cur:
                    judge_before_step(cur, batch)  # guards steer from the very next step
                nxt = self._launch(cur) if cur else None
                if cur:
                    self._consume(cur)
                nxt = self._sample_constrained(nxt)
                nxt = self._drop_finished(nxt)
                cur = self._admit(nxt)
            except Exception as exc:  # noqa: BLE001 - a failed step fails the rows in it, not the thread
                log.exception("decode step failed")
                err = as_api_error(exc)
                # Every job with a row in the batch fails, finished rows included: a step that
                # raised posted none of its events, so a row that ended in it never told its client.
                for job in dict.fromkeys(row.job for row in batch.uids):
                    job.post([Failed(err)])
                for row in batch.uids:
                    row.done = True
                batch.remove(batch.uids)
                cur = None
            self.batch_size = len(batch)

    def _pull(self, block: bool) -> bool:
        """Move arrived jobs to the waiting line; False when the server is stopping."""
        try:
            item = self._inbox.get() if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            self._waiting.append(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return True

    # -- decoding --------------------------------------------------------------------------------
    def _launch(self, cur: list[Part]) -> list[Part]:
        rows = self._batch.uids
        tokens = cur[0].sampled.tokens if len(cur) == 1 else mx.concatenate([p.sampled.tokens for p in cur])
        capture = any(r.wants_probes for r in rows)
        logits, hidden = self._batch.step(tokens, capture=capture)
        scores = self._probes.bank.scores(hidden) if capture else None
        bank = self._probes.bank if capture else None
        self.steps += 1
        if any(r.constraint is not None for r in rows):
            # The masks need the tokens of the step being read now: run the forward pass, sample later.
            mx.async_eval([logits] + ([scores] if scores is not None else []))
            return [Part(list(rows), None, scores, bank, logits=logits)]
        sampled = sample(logits, [r.sampler for r in rows])
        mx.async_eval(sampled.arrays() + ([scores] if scores is not None else []))
        return [Part(list(rows), sampled, scores, bank)]

    def _sample_constrained(self, parts: list[Part] | None) -> list[Part] | None:
        """Sample a launched step whose rows include grammar-constrained ones, now that their matchers saw the last tokens."""
        for part in parts or ():
            if part.sampled is None:
                logits = self._masked(part.logits, part.rows)
                part.sampled = sample(logits, [r.sampler for r in part.rows])
                part.logits = None
                mx.async_eval(part.sampled.arrays())
        return parts

    def _masked(self, logits, rows):
        masks = constraints.bitmasks([None if r.done else r.constraint for r in rows])
        return logits if masks is None else constraints.apply_masks(logits, masks, self._grammars)

    def _consume(self, parts: list[Part]) -> None:
        outbox: dict[Job, list] = {}
        for part in parts:
            s = part.sampled
            tokens = s.tokens.tolist()
            logprobs = s.logprob.tolist() if s.logprob is not None else None
            top_ids = s.top_ids.tolist() if s.top_ids is not None else None
            top_lps = s.top_logprobs.tolist() if s.top_logprobs is not None else None
            scores = part.host_scores()
            for i, row in enumerate(part.rows):
                if row.done:
                    continue
                events = outbox.setdefault(row.job, [])
                if row.job.cancelled:
                    row.done = True
                    continue
                reading = None
                if scores is not None and row.wants_probes:
                    reading = scores[i][:, row.columns(part.bank)].T  # (P, L)
                lp = logprobs[i] if logprobs is not None and row.sampler.params.logprobs else None
                top = []
                if top_ids is not None and row.sampler.params.top_logprobs:
                    pairs = sorted(zip(top_lps[i], top_ids[i]), reverse=True)[: row.sampler.params.top_logprobs]
                    top = [(self._texts(t), v) for v, t in pairs]
                row.advance(tokens[i], lp, top, reading, events)
        for job, events in outbox.items():
            job.post(events)

    def _drop_finished(self, nxt: list[Part] | None) -> list[Part] | None:
        rows = self._batch.uids
        gone = [r for r in rows if r.done or r.job.cancelled]
        if not gone:
            return nxt
        for r in gone:
            r.done = True
        self._batch.remove(gone)
        if nxt is None or not len(self._batch):
            return None
        parts = []
        for part in nxt:
            keep = [i for i, r in enumerate(part.rows) if not r.done]
            if len(keep) == len(part.rows):
                parts.append(part)
            elif keep:
                parts.append(part.take(keep))
        return parts

    # -- admission ---------------------------------------------------------------------------------
    def _admit(self, cur: list[Part] | None) -> list[Part] | None:
        parts = list(cur or [])
        self._forget_cancelled()
        while self._waiting:
            job = self._waiting[0]
            room = self.limits.max_batch - len(self._batch)
            rows_needed = len(job.spec.choices) if job.spec.max_tokens > 0 else 0
            if rows_needed > room and len(self._batch) > 0:
                break  # wait for rows to finish; a request larger than the batch runs alone
            if self._probes.replaced(self._running_specs(), job.spec):
                break  # the bank holds one probe per name: wait for the rows reading the old one
            self._waiting.popleft()
            with self._lock:
                self._queued -= 1
            if job.cancelled:
                continue
            try:
                parts.extend(self._start(job))
            except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
                err = as_api_error(exc)
                if err.status >= 500:
                    log.exception("request failed in the model thread")
                self._batch.remove([r for r in self._batch.uids if r.job is job])
                parts = [p for p in parts if all(r.job is not job for r in p.rows)]
                job.post([Failed(err)])
        self.batch_size = len(self._batch)
        return parts or None

    def _running_specs(self) -> list:
        return list({id(row.job): row.job.spec for row in self._batch.uids}.values())

    def _forget_cancelled(self) -> None:
        """Jobs whose client left while queued go at once: they must not hold a queue place or block the line."""
        if not any(job.cancelled for job in self._waiting):
            return
        kept = deque(job for job in self._waiting if not job.cancelled)
        with self._lock:
            self._queued -= len(self._waiting) - len(kept)
        self._waiting = kept

    def _start(self, job: Job) -> list[Part]:
        spec = job.spec
        names = tuple(r.name for r in spec.probes_read)
        if names:
            self._probes.ensure(self._running_specs(), extra=spec.probes_read)
        groups: dict[tuple, list[ChoiceSpec]] = {}
        for c in spec.choices:
            groups.setdefault((c.prompt, prompt_key(c.interventions)), []).append(c)
        parts, events = [], []
        echo_scores = spec.echo and bool(spec.probes)
        for (tokens, steer_key), choices in groups.items():
            ivs = choices[0].interventions
            cache, cached = (None, 0) if echo_scores else self._prompt_cache.lookup(steer_key, tokens)
            pre = self._batch.prefill(list(tokens), ivs, cache=cache, cached_tokens=cached, capture_all=echo_scores)
            if not echo_scores:
                self._prompt_cache.store(steer_key, tokens, pre.cache)
            reading, token_readings = None, []
            if names:
                bank = self._probes.bank
                cols = [bank.index(n) for n in names]
                reading = np.array(bank.scores(pre.hidden_last[None]))[0][:, cols].T
                if echo_scores:
                    per_token = np.array(bank.scores(pre.hidden_all))[:, :, cols]  # (T, L, P)
                    token_readings = [per_token[t].T for t in range(per_token.shape[0])]
            for c in choices:
                events.append(PromptRead(c.index, reading, token_readings, cached))
                if spec.max_tokens == 0:
                    events.append(ChoiceEnd(c.index, "length", 0))
                    continue
                guard, row_pre, ivs = None, pre, c.interventions
                if c.guard:
                    guard = RowGuard(c.guard, c.interventions, names)
                    if guard.judge_prompt(reading):  # a prompt_last rule: steer the whole generation
                        ivs = guard.interventions()
                        row_pre = rerun_prompt(self._batch, tokens, ivs, self._prompt_cache)
                    if guard.stopped:
                        events.append(ChoiceEnd(c.index, "content_filter", 0, guard=guard.take_fired()))
                        continue
                row = RowState(
                    job=job,
                    choice=c,
                    sampler=RowSampler(spec.sampling, self.vocab_size, c.index),
                    detok=self.lm.tokenizer.detokenizer,
                    stops=StopMatcher(spec.stop),
                    probe_names=names,
                    eos=self._eos,
                    texts=self._texts,
                    reported=len(spec.probes),
                    guard=guard,
                    constraint=self._grammars.matcher(spec.grammar) if spec.grammar is not None else None,
                )
                first = sample(self._masked(row_pre.logits[None], [row]), [row.sampler])
                mx.async_eval(first.arrays())
                self._batch.add(row, row_pre, ivs)
                parts.append(Part([row], first))
        job.post(events)
        return parts


def _vocab_size(lm) -> int:
    args = getattr(lm.model, "args", None)
    size = getattr(args, "vocab_size", None) or lm.config.get("vocab_size")
    if size is None:
        size = len(lm.tokenizer.get_vocab())
    return int(size)
