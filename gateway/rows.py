"""One choice in the batch: what it has generated and the events it turns each token into.

Detokenizing, stop strings, logprob text and the one-step delay of rows that
read probes live here, so the engine only moves tokens between the model and
its rows.

Probe readings: a token's reading is the residual stream after the model has
read that token, which comes out of the step that feeds the token. Rows with
probes therefore emit each token one step later, together with its reading.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import ChoiceEnd, Job, TokenOut
from .protocol import ChoiceSpec
from .sampling import RowSampler
from .stops import StopMatcher


class TokenTexts:
    """Each token id's text alone, decoded once (logprob entries name tokens by their text)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._text: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        text = self._text.get(token)
        if text is None:
            text = self._tokenizer.decode([token])
            self._text[token] = text
        return text


@dataclass(eq=False)
class RowState:
    job: Job
    choice: ChoiceSpec
    sampler: RowSampler
    detok: object
    stops: StopMatcher
    probe_names: tuple[str, ...]
    eos: frozenset
    texts: TokenTexts
    reported: int = 0  # how many of probe_names the response reports (the rest only guards read)
    guard: object = None  # guards.RowGuard when the choice has guard rules
    generated: int = 0
    first: bool = True
    constraint: object = None  # constraints.RowConstraint: the grammar this row's tokens must follow
    held: tuple | None = None  # (token, logprob, top) waiting for its reading
    draining: str | None = None  # the finish reason, once the held token is the last; one more step to read it
    done: bool = False
    _columns: tuple = (None, [])  # (bank, this row's probe columns in it): looked up once per bank

    @property
    def wants_probes(self) -> bool:
        return bool(self.probe_names)

    @property
    def max_tokens(self) -> int:
        return self.job.spec.max_tokens

    def columns(self, bank) -> list[int]:
        if self._columns[0] is not bank:
            self._columns = (bank, [bank.index(n) for n in self.probe_names])
        return self._columns[1]

    def advance(self, token: int, logprob, top, reading, events: list) -> None:
        """Take the token sampled for this row in the last step (and the reading of the token fed in it)."""
        if self.constraint is not None:
            self.constraint.consume(token)
        if self.first:
            self.first = False  # the prompt's reading went out with PromptRead
        elif self.held is not None:
            if self.guard is not None and not self.guard.steers and reading is not None:
                self.guard.judge_token(self.generated - 1, reading)  # stop-only rules: judged as the token goes out
            held, self.held = self.held, None
            self._emit(*held, reading, events)
            if self.done:
                return
            if self.draining:
                return self.finish(self.draining, events)
        if token in self.eos:
            return self.finish("stop", events)
        self.generated += 1
        # A grammar that has matched a whole document ends the row now: only the end could follow.
        if self.constraint is not None and self.constraint.complete:
            ending = "stop"
        else:
            ending = "length" if self.generated >= self.max_tokens else None
        if self.wants_probes:
            self.held = (token, logprob, top)
            self.draining = ending
            return
        self._emit(token, logprob, top, None, events)
        if not self.done and ending:
            self.finish(ending, events)

    def _emit(self, token: int, logprob, top, reading, events: list) -> None:
        self.detok.add_token(token)
        text, stopped = self.stops.feed(self.detok.last_segment)
        shown = reading[: self.reported] if reading is not None and self.reported else None
        fired = self.guard.take_fired() if self.guard is not None else None
        events.append(TokenOut(self.choice.index, token, text, self.texts(token), logprob, top, shown, fired))
        if stopped:
            self.finish("stop", events, flush=False)
        elif self.guard is not None and self.guard.stopped:
            self.finish("content_filter", events)

    def finish(self, reason: str, events: list, flush: bool = True) -> None:
        tail = ""
        if flush:
            self.detok.finalize()
            tail, stopped = self.stops.feed(self.detok.last_segment)
            if stopped:
                reason = "stop"
            else:
                tail += self.stops.flush()
        self.done = True
        fired = self.guard.take_fired() if self.guard is not None else None
        events.append(ChoiceEnd(self.choice.index, reason, self.generated, tail, fired))
