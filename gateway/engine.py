"""The model thread: continuous batching over steering.generation.DecodeBatch.

One thread owns the model. It installs the steering hook once
(steering_session) and keeps it for the server's life. Requests arrive on a
thread-safe queue; results go back to the event loop with
loop.call_soon_threadsafe, one call per request per decode step.

Each iteration:
  1. launch the next decode step for every running row (lazy, async_eval'd),
  2. read the previous step's tokens into Python while that runs,
  3. drop rows that finished or whose client went away,
  4. hand free batch slots to waiting rows (admission.py: rows, not requests,
     fairly), run one chunk of one waiting prompt, and join prefilled rows.
So the Python work of step t overlaps the forward pass of step t+1, as in
mlx_lm.generate_step. A row that finished in step t costs one wasted row in
step t+1.

The pieces around the loop have modules of their own: events.py (what goes
back to the event loop), rows.py (per-row output: detokenizing, stops,
logprob text), admission.py (slots and prompt groups), prompt_cache.py,
probe_upkeep.py and numerics.py (non-finite activations fail their request).

If the thread itself dies, every request it holds fails (503) and `on_death`
is called (the server then exits non-zero so its service manager restarts it).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from mlx_interp.steering.backend import prime_compiler
from mlx_interp.steering.generation import steering_session

from . import constraints
from .admission import Admission, PromptGroup
from .batch_size import fit_max_batch
from .echo_logprobs import prompt_entries, prompt_logprobs_k
from .errors import QueueFull, Unavailable, as_api_error, one_line
from .events import ChoiceEnd, Failed, Job, PromptRead
from .guards import RowGuard, judge_before_step, rerun_prompt
from .limits import Limits
from .numerics import finite_rows, non_finite_error
from .probe_upkeep import BankKeeper, column_key
from .prompt_cache import PromptCache
from .ranks import RankFailure
from .rows import RowState, TokenTexts
from .sampling import RowSampler, Sampled, sample
from .stops import StopMatcher

log = logging.getLogger("mlx_interp.gateway")

RETRY_AFTER_S = 1  # what a 429 tells the client to wait
# Fault injection for the death test only: the model thread raises after this many decode steps.
FAULT_ENV = "MLX_INTERP_FAULT_MODEL_THREAD_AFTER_STEPS"


_END_ALL = object()  # inbox marker: fail every request held (the server is shutting down)


class ModelThreadFault(BaseException):
    """Injected death of the model thread (a BaseException: the per-step handler must not catch it)."""


@dataclass
class Part:
    """Outputs of one forward pass for some consecutive rows of the batch."""

    rows: list
    sampled: Sampled | None  # None until a batch with constrained rows has its masks (see _sample_constrained)
    scores: object = None  # mx (b, L, P) readings of the tokens fed in that pass
    bank: object = None
    finite: object = None  # mx (b,) bool: the row's logits were all finite
    logits: object = None  # kept only while sampling waits for grammar masks
    _host: object = None  # scores as numpy, read once

    def host_scores(self):
        if self._host is None and self.scores is not None:
            self._host = np.array(self.scores)
        return self._host

    def take(self, keep: list[int]) -> "Part":
        idx = mx.array(keep)
        scores = None if self.scores is None else self.scores[idx]
        finite = None if self.finite is None else self.finite[idx]
        return Part([self.rows[i] for i in keep], self.sampled.take(idx), scores, self.bank, finite)


# -- the engine ------------------------------------------------------------------------------


class Engine:
    def __init__(self, lm, limits: Limits, ranks=None):
        self.lm = lm
        self.batch_fit = None  # how max_batch was fitted to the machine, when it was (batch_size.py)
        if limits.max_batch <= 0:  # the default: as many rows as this machine holds
            self.batch_fit = fit_max_batch(lm, limits)
            limits = replace(limits, max_batch=self.batch_fit.max_batch)
        self.ranks = ranks  # gateway.ranks.RankSet when the model spans several processes (serve --ranks)
        self.limits = limits
        self.vocab_size = _vocab_size(lm)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[Job] = deque()
        self._admitting: list[Admission] = []  # requests with rows still outside the batch
        self._prefilling: deque[tuple[Admission, PromptGroup]] = deque()  # round-robin, one chunk per iteration
        self._queued = 0  # submitted, not yet admitted (guarded by _lock)
        self._lock = threading.Lock()
        self._dead = False  # set (under _lock) when the thread stops: submit refuses from then on
        self.on_death = None  # called from the model thread after it failed everything it held
        self._fault_after = int(os.environ.get(FAULT_ENV, "0") or 0)
        self._eos = frozenset(lm.tokenizer.eos_token_ids)
        self._prompt_cache = PromptCache(limits.prompt_cache_entries, limits.prompt_cache_bytes)
        self._probes = ranks.bank_keeper(lm) if ranks is not None else BankKeeper(lm.num_layers, lm.hidden_size)
        self._texts = TokenTexts(lm.tokenizer)
        self._grammars = constraints.GrammarEngine(lm.tokenizer, self.vocab_size)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="mlx-interp-model", daemon=True)
        self.steps = 0
        self.prefill_chunks = 0

    # -- called from the event loop ---------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise RuntimeError(f"model thread failed to start: {self._failure}")

    def stop(self) -> None:
        """End the model thread (requests it still holds fail with 503) and wait for it; safe to call twice."""
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def end_all(self) -> None:
        """Every request held or waiting fails now with 503 (streams end in-band); later submits get 503 too.

        For a shutdown whose drain time ran out: clients get a finished stream instead of a dropped one.
        """
        self._inbox.put(_END_ALL)

    @property
    def failure(self) -> BaseException | None:
        """Why the model thread stopped, if it failed."""
        return self._failure

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        return self._queued

    @property
    def prefilling(self) -> int:
        """Prompts being read now (each holds a batch slot)."""
        return len(self._prefilling)

    @property
    def batch_size(self) -> int:
        """Rows decoding now, read live (/metrics); 0 before the model thread has its batch."""
        batch = getattr(self, "_batch", None)
        return len(batch) if batch is not None else 0

    def slots(self) -> tuple[int, int]:
        """(rows decoding, prompts being read), as another thread (/health) sees them now.

        Both live, read in this order: a finished prompt leaves the prefill line before its row joins
        the batch, so the sum can miss a slot at that moment but never counts one twice. (A cached
        row count, set after rows left while prompts already held their slots, once read 17 of 16.)
        """
        rows = self.batch_size
        return rows, len(self._prefilling)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._dead or not self.alive:
                raise Unavailable("the model thread is not running")
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
            with steering_session(self.lm, capture_layers=None) as local, self._replicated(local) as batch:
                self._batch = batch
                prime_compiler()  # before serving: see steering/backend.py (a lost Ctrl-C)
                local.warm_up()  # a GPU JIT-compiles its kernels on the first trace (~20 s for a 7B); no-op on ranks
                self._ready.set()
                self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            self._failure = exc
            log.error("model thread stopped: %s", one_line(exc))
            if self._ready.is_set():  # it was serving: nobody may wait for it
                why = f"{exc}; " if isinstance(exc, RankFailure) else "the model thread stopped; "
                self._fail_everything(Unavailable(why + "the server is restarting"))
                if self.on_death is not None:
                    self.on_death()
        finally:
            self._ready.set()

    def _replicated(self, batch):
        """With --ranks, every model operation of the batch also runs on the other ranks (gateway/ranks.py)."""
        return self.ranks.session(batch) if self.ranks is not None else nullcontext(batch)

    def abandon(self, err) -> None:
        """From another thread, when the model thread cannot return (a rank hung): fail everything it holds, stop serving."""
        self._failure = self._failure or RankFailure(str(err))
        self._fail_everything(err)
        if self.on_death is not None:
            self.on_death()

    def _fail_everything(self, err) -> None:
        """Every request the thread holds or will be handed fails now; later submits get 503."""
        with self._lock:
            self._dead = True
            pending = list(self._waiting)
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    pending.append(item)
        batch = getattr(self, "_batch", None)
        jobs = [row.job for row in batch.uids] if batch is not None else []
        jobs += [a.job for a in self._admitting] + pending
        for job in dict.fromkeys(jobs):
            job.post([Failed(err)])

    def _end_everything(self) -> None:
        """Fail every job held, in the batch, admitting or waiting (503); they leave at the next drop."""
        with self._lock:
            self._dead = True
        err = Unavailable("the server is shutting down")
        jobs = [row.job for row in self._batch.uids] + [a.job for a in self._admitting] + list(self._waiting)
        for job in dict.fromkeys(jobs):
            if not job.cancelled:
                job.cancelled = True
                job.post([Failed(err)])

    def _loop(self) -> None:
        batch = self._batch
        cur: list[Part] | None = None
        while True:
            idle = cur is None and not self._waiting and not self._admitting and not self._prefilling
            if not self._pull(block=idle):
                self._end_everything()  # nobody may wait for a thread that has stopped
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
                err = as_api_error(exc)  # one log line for the step, however many requests it fails
                # Every job with a row in the batch fails, finished rows included: a step that
                # raised posted none of its events, so a row that ended in it never told its client.
                for job in dict.fromkeys(row.job for row in batch.uids):
                    job.cancelled = True  # its prompts still waiting for a slot go too
                    job.post([Failed(err)])
                for row in batch.uids:
                    row.done = True
                batch.remove(batch.uids)
                cur = None

    def _pull(self, block: bool) -> bool:
        """Move arrived jobs to the waiting line; False when the server is stopping."""
        try:
            item = self._inbox.get() if block else self._inbox.get_nowait()
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            if item is _END_ALL:
                self._end_everything()
            else:
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
        finite = finite_rows(logits)
        scores = self._probes.bank.scores(hidden) if capture else None
        bank = self._probes.bank if capture else None
        self.steps += 1
        if self._fault_after and self.steps >= self._fault_after:
            raise ModelThreadFault(f"injected by {FAULT_ENV}")
        if any(r.constraint is not None for r in rows):
            # The masks need the tokens of the step being read now: run the forward pass, sample later.
            mx.async_eval([logits, finite] + ([scores] if scores is not None else []))
            return [Part(list(rows), None, scores, bank, finite, logits=logits)]
        sampled = sample(logits, [r.sampler for r in rows])
        mx.async_eval(sampled.arrays() + [finite] + ([scores] if scores is not None else []))
        return [Part(list(rows), sampled, scores, bank, finite)]

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
            finite = part.finite.tolist() if part.finite is not None else None
            for i, row in enumerate(part.rows):
                if row.done:
                    continue
                events = outbox.setdefault(row.job, [])
                if row.job.cancelled:
                    row.done = True
                    continue
                if finite is not None and not finite[i]:
                    self._poison(row.job, events)
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

    def _poison(self, job: Job, events: list) -> None:
        """The job's activations went non-finite: it fails (400 naming its steering); its rows leave at the next drop."""
        events[:] = [Failed(non_finite_error(job.spec))]
        job.cancelled = True  # its other rows and waiting prompts go too
        for row in self._batch.uids:
            if row.job is job:
                row.done = True

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
        """Free slots to waiting rows (fairly), one prefill chunk, prefilled rows into the batch."""
        parts = list(cur or [])
        self._forget_cancelled()
        self._drop_cancelled_admissions()
        free = self.limits.max_batch - len(self._batch) - len(self._prefilling)
        held = {adm.job: adm.prefilling for adm in self._admitting}  # slots each request holds: prompts and rows
        for row in self._batch.uids:
            held[row.job] = held.get(row.job, 0) + 1
        while free > 0:
            adm = self._claimant(held)
            if adm is None:
                break
            free -= 1
            held[adm.job] = held.get(adm.job, 0) + 1
            self._guarded(adm, parts, lambda: self._grant(adm, parts))
        self._prefill_round(parts)
        self._admitting = [a for a in self._admitting if not a.finished]
        self._drop_cancelled_admissions()  # prefills and admissions leave together, never one without the other
        return parts or None

    def _claimant(self, held: dict) -> Admission | None:
        """Who gets the next free slot: the request holding fewest slots, the oldest on ties."""
        best, best_rank = None, None
        for adm in self._admitting:
            if adm.next_claim() is not None:
                rank = (held.get(adm.job, 0), adm.order)
                if best_rank is None or rank < best_rank:
                    best, best_rank = adm, rank
        if best is not None and best_rank[0] == 0:
            return best
        while self._waiting:  # a newcomer holds nothing: it goes before anyone holding a slot
            job = self._waiting.popleft()
            with self._lock:
                self._queued -= 1
            if job.cancelled:
                continue
            adm = Admission.of(job)
            self._admitting.append(adm)
            return adm
        return best

    def _guarded(self, adm: Admission, parts: list, work) -> None:
        """Run admission work for one request; if it raises, that request fails and the others go on."""
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - this request fails, the others go on
            self._fail_job(adm.job, as_api_error(exc), parts)  # a 500 is logged there, in one line

    def _fail_job(self, job: Job, err, parts: list) -> None:
        job.cancelled = True
        self._batch.remove([r for r in self._batch.uids if r.job is job])
        parts[:] = [p for p in parts if all(r.job is not job for r in p.rows)]
        self._drop_cancelled_admissions()
        job.post([Failed(err)])

    def _grant(self, adm: Admission, parts: list) -> None:
        """One slot for adm: a prefilled choice joins the batch, or the next prompt starts prefilling."""
        group = adm.next_claim()
        if group.ready:
            self._join_into(adm, group, parts)
            return
        spec = adm.job.spec
        capture_all = spec.echo and bool(spec.probes)
        top_k = prompt_logprobs_k(spec)  # None unless echo + logprobs: then every prompt token is scored
        fresh = capture_all or top_k is not None  # both need every prompt position computed
        cache, cached = (None, 0) if fresh else self._prompt_cache.lookup(group.steer_key, group.tokens)
        group.cached_tokens = cached
        group.task = self._batch.start_prefill(
            list(group.tokens), group.choices[0].interventions, cache=cache, cached_tokens=cached,
            capture_all=capture_all, chunk=self.limits.prefill_chunk_tokens, prompt_logprobs=top_k,
        )
        if capture_all:  # keep per-token probe scores, not every token's every layer, while a long prompt is read
            group.task.reduce = lambda states: self._prompt_scores(spec, states)
        self._prefilling.append((adm, group))

    def _prefill_round(self, parts: list) -> None:
        """Prompts in flight each read their next chunk, round-robin, until one chunk's worth of tokens is read:
        many short prompts join together, and a long one delays the next decode step by one chunk at most."""
        budget = self.limits.prefill_chunk_tokens
        for _ in range(len(self._prefilling)):
            if budget <= 0 or not self._prefilling:
                break
            adm, group = self._prefilling[0]  # stays in the line while it runs: /health counts it
            if adm.job.cancelled:
                self._prefilling.popleft()
                continue
            size = min(group.task.tokens_left, budget)
            budget -= size
            self._guarded(adm, parts, lambda: self._prefill_chunk(adm, group, parts, size))

    def _prefill_chunk(self, adm: Admission, group: PromptGroup, parts: list, size: int) -> None:
        """One chunk of the prompt at the head of the line; a finished prompt leaves the line, posts its
        readings, and its first choice joins the batch. An unfinished one goes to the back."""
        pre = group.task.advance(size)
        self.prefill_chunks += 1
        if pre is None:
            self._prefilling.rotate(-1)
            return
        self._prefilling.popleft()
        group.task = None
        spec = adm.job.spec
        if not bool(mx.isfinite(pre.logits).all()):
            raise non_finite_error(spec)
        capture_all = spec.echo and bool(spec.probes)
        if not capture_all:
            self._prompt_cache.store(group.steer_key, group.tokens, pre.cache)
        reading, token_readings = None, []
        if spec.probes_read:
            self._probes.ensure(self._running_specs(), extra=spec.probes_read)
            bank = self._probes.bank
            cols = [bank.index(column_key(r)) for r in spec.probes_read]
            reading = np.array(bank.scores(pre.hidden_last[None]))[0][:, cols].T
            if capture_all:
                per_token = pre.hidden_all  # (T, L, P): reduced chunk by chunk (_prompt_scores)
                token_readings = [per_token[t].T for t in range(per_token.shape[0])]
        group.reading = reading
        echoed = None if pre.prompt_logprobs is None else prompt_entries(pre.prompt_logprobs, group.tokens, self._texts)
        events = [PromptRead(c.index, reading, token_readings, group.cached_tokens, echoed) for c in group.choices]
        if spec.max_tokens == 0:
            events += [ChoiceEnd(c.index, "length", 0) for c in group.choices]
            group.choices.clear()
            adm.job.post(events)
            return
        adm.job.post(events)
        group.pre = pre
        self._join_into(adm, group, parts)  # the slot this prompt held becomes its first row

    def _prompt_scores(self, spec, states) -> np.ndarray:
        """(t, L, D) prompt states -> (t, L, P) scores of the probes spec reads, in spec's order."""
        self._probes.ensure(self._running_specs(), extra=spec.probes_read)
        bank = self._probes.bank
        cols = [bank.index(column_key(r)) for r in spec.probes_read]
        return np.array(bank.scores(states))[:, :, cols]

    def _join_into(self, adm: Admission, group: PromptGroup, parts: list) -> None:
        """The group's next choice joins the batch (unless a guard's prompt rule ends it at once)."""
        job, c = adm.job, group.choices.popleft()
        spec = job.spec
        if not group.choices:
            pre, group.pre = group.pre, None  # its cache goes to the batch
        else:
            pre = group.pre
        names = tuple(r.name for r in spec.probes_read)
        if names:
            self._probes.ensure(self._running_specs(), extra=spec.probes_read)
        guard, row_pre, ivs = None, pre, c.interventions
        if c.guard:
            guard = RowGuard(c.guard, c.interventions, names)
            if guard.judge_prompt(group.reading):  # a prompt_last rule: steer the whole generation
                ivs = guard.interventions()
                row_pre = rerun_prompt(self._batch, group.tokens, ivs, self._prompt_cache)
            if guard.stopped:
                job.post([ChoiceEnd(c.index, "content_filter", 0, guard=guard.take_fired())])
                return
        row = RowState(
            job=job,
            choice=c,
            sampler=RowSampler(spec.sampling, self.vocab_size, c.index),
            detok=self.lm.tokenizer.detokenizer,
            stops=StopMatcher(spec.stop),
            probe_names=tuple(column_key(r) for r in spec.probes_read),  # bank columns, in `names` order
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

    def _drop_cancelled_admissions(self) -> None:
        """A request whose client left stops between chunks and between rows: its prompts give their slots back."""
        if any(adm.job.cancelled for adm, _ in self._prefilling):
            self._prefilling = deque((a, g) for a, g in self._prefilling if not a.job.cancelled)
        if any(adm.job.cancelled for adm in self._admitting):
            self._admitting = [a for a in self._admitting if not a.job.cancelled]


def _vocab_size(lm) -> int:
    args = getattr(lm.model, "args", None)
    size = getattr(args, "vocab_size", None) or lm.config.get("vocab_size")
    if size is None:
        size = len(lm.tokenizer.get_vocab())
    return int(size)
