"""Watch an agent's conversation through the server's probes, token by token.

    monitor = Monitor(client, rules=[AlarmRule("sycophancy", 0.8, consecutive=3)],
                      record="run.jsonl", on_alarm=print)
    for event in monitor.say("Are you sure? I think it's 12."):
        print(event.text, end="")          # text as it streams
        event.scores                       # {"sycophancy": 0.91} for this token
    monitor.turns[-1].alarms               # what fired in that turn

A rule fires when its probe's per-token score stays at or above the threshold for
`consecutive` tokens in a row; it re-arms once the score drops back. On a fire
the monitor calls `on_alarm(alarm)`, and with `raise_on_alarm=True` stops the
stream and raises `ProbeAlarm`. Every turn (also one stopped by an alarm) is
appended to the JSONL record: messages, text, per-token scores, aggregates, alarms.

The monitor can also rely on the server's own guards (api.md section 4b):

    monitor = Monitor(client, guards=[ServerGuard("sycophancy", 0.9, then="stop")], on_guard=print)

Those rules run inside the server's decode loop, so a "stop" ends the reply at
the token that crossed (finish_reason "content_filter") and a "steer" changes
the very next tokens, which a client-side rule, one network hop behind, cannot
do. What the server reports as fired lands in `turn.guard_fired` (and
`on_guard`), next to the monitor's own alarms, which keep working alongside.

A probe read per token (position "token") is scored live; a probe read once
(`prompt_last`, `answer_end`) has one score per reply, in the final chunk, and
a local rule on it is judged on that score.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .extensions import ProbeRequest, ServerGuard, SteerLike, guard_json, steer_json
from .positions import ProbePositions
from .readers import GuardFired, chunk_text, finish_reason, guard_fired, probe_scores, steering_applied



@dataclass(frozen=True)
class AlarmRule:
    """Fire when `probe` scores at or above `threshold` for `consecutive` tokens in a row.

    At or above, like the server's `flagged`, so a rule and the flag agree on one token.
    """

    probe: str
    threshold: float
    consecutive: int = 1

    def __post_init__(self):
        ProbeRequest(self.probe)  # same name rules as the server
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= float(self.threshold) <= 1.0):
            raise ValueError(f"threshold for {self.probe!r} must be a probability in [0, 1], got {self.threshold!r}")
        if not (isinstance(self.consecutive, int) and self.consecutive >= 1):
            raise ValueError(f"consecutive for {self.probe!r} must be a whole number >= 1, got {self.consecutive!r}")

    def describe(self) -> str:
        run = f" for {self.consecutive} tokens" if self.consecutive > 1 else ""
        return f"{self.probe} >= {self.threshold:g}{run}"


@dataclass(frozen=True)
class Alarm:
    """A rule that fired: where (turn, token) and on which scores."""

    rule: AlarmRule
    turn: int
    token_index: int  # the token that completed the run (0-based, within the reply)
    scores: tuple[float, ...]  # the run of scores at or above the threshold
    text_so_far: str

    def to_json(self) -> dict:
        return {
            "probe": self.rule.probe,
            "threshold": self.rule.threshold,
            "consecutive": self.rule.consecutive,
            "turn": self.turn,
            "token_index": self.token_index,
            "scores": list(self.scores),
            "text_so_far": self.text_so_far,
        }

    def __str__(self) -> str:
        return f"turn {self.turn}, token {self.token_index}: {self.rule.describe()} (last {self.scores[-1]:.2f})"


class ProbeAlarm(Exception):
    """Raised by a monitor with raise_on_alarm=True; carries the alarm and the (partial) turn."""

    def __init__(self, alarm: Alarm, turn: "TurnRecord | None" = None):
        super().__init__(f"probe alarm: {alarm}")
        self.alarm = alarm
        self.turn = turn


@dataclass
class TokenEvent:
    """A piece of the streamed reply: its text and, when it is a token, that token's scores."""

    text: str
    token_index: int | None
    scores: dict[str, float]
    alarms: list[Alarm] = field(default_factory=list)
    guard: list[GuardFired] = field(default_factory=list)  # server guard rules that fired on this chunk


@dataclass
class TurnRecord:
    """One reply as the monitor saw it; one JSONL line in the record."""

    conversation: str
    turn: int
    messages: list[dict]
    text: str = ""
    finish_reason: str | None = None
    per_token: dict[str, list[float | None]] = field(default_factory=dict)
    aggregates: dict[str, dict] = field(default_factory=dict)
    alarms: list[Alarm] = field(default_factory=list)
    steering: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    stopped_by_alarm: bool = False
    guard_fired: list[GuardFired] = field(default_factory=list)
    stopped_by_guard: bool = False  # the server ended the reply (finish_reason "content_filter")

    def to_json(self) -> dict:
        return {
            "conversation": self.conversation,
            "turn": self.turn,
            "time": self.started,
            "seconds": round(self.seconds, 3),
            "messages": self.messages,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "per_token": {k: [_finite_or_none(v) for v in vals] for k, vals in self.per_token.items()},
            "aggregates": self.aggregates,
            "alarms": [a.to_json() for a in self.alarms],
            "steering": self.steering,
            "stopped_by_alarm": self.stopped_by_alarm,
            "guard_fired": [asdict(f) for f in self.guard_fired],
            "stopped_by_guard": self.stopped_by_guard,
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class _RuleState:
    """The current run of above-threshold scores for one rule."""

    def __init__(self, rule: AlarmRule):
        self.rule = rule
        self.run: list[float] = []
        self.fired = False

    def feed(self, score: float | None) -> bool:
        """Add a token's score; True when this token makes the rule fire."""
        if score is None or score < self.rule.threshold:
            self.run.clear()
            self.fired = False  # re-arm
            return False
        self.run.append(score)
        if not self.fired and len(self.run) >= self.rule.consecutive:
            self.fired = True
            return True
        return False


class Monitor:
    """Streams chat turns through a client, scoring every token with the rules' probes.

    `client` is an `MlxInterpClient` (anything with its `stream_chat`). `probes`
    adds probes to record without rules. `guards` are rules the server runs
    itself (`ServerGuard`); `on_guard` is called with each one that fired.
    `messages` is the conversation so far; `say()` extends it, `stream()` runs a
    turn on messages you pass.
    """

    def __init__(
        self,
        client: Any,
        rules: Iterable[AlarmRule] = (),
        *,
        model: str | None = None,
        probes: Iterable[str] = (),
        steer: SteerLike | None = None,
        record: str | Path | None = None,
        on_alarm: Callable[[Alarm], None] | None = None,
        raise_on_alarm: bool = False,
        guards: Iterable[ServerGuard] = (),
        on_guard: Callable[[GuardFired], None] | None = None,
        messages: list[dict] | None = None,
        conversation_id: str | None = None,
        **request_options: Any,
    ):
        self.client = client
        self.rules = list(rules)
        names = [r.probe for r in self.rules] + [p for p in probes]
        self.probe_names = list(dict.fromkeys(names))
        self.guards = list(guards)
        if not self.probe_names and not self.guards:
            raise ValueError("a monitor needs at least one probe (a rule, probes=[...]) or a server guard")
        self.on_guard = on_guard
        self._positions = ProbePositions(client)
        self.model = model
        self.steer = steer_json(steer) if steer else None
        self.record_path = Path(record) if record is not None else None
        self.on_alarm = on_alarm
        self.raise_on_alarm = raise_on_alarm
        self.messages: list[dict] = list(messages or [])
        self.conversation_id = conversation_id or uuid.uuid4().hex[:12]
        self.request_options = request_options
        self.turns: list[TurnRecord] = []

    @property
    def alarms(self) -> list[Alarm]:
        return [a for t in self.turns for a in t.alarms]

    def _probe_request(self) -> dict:
        # per_token only where the probe has a reading per token: asking it of another is a 400
        return self._positions.request(self.probe_names)

    def request_body(self) -> dict:
        """The `extra_body` a monitored request needs: its probes, server guards and steering."""
        body: dict = {}
        if self.probe_names:
            body["probes"] = self._probe_request()
        if self.guards:
            body["guard"] = guard_json(self.guards)
        if self.steer:
            body["steer"] = self.steer
        return body

    def stream(self, messages: list[dict], **options: Any) -> Iterator[TokenEvent]:
        """Run one turn on `messages` (history untouched); yields TokenEvents, records the turn."""
        request = {**self.request_options, **options}
        extra_body = {**(request.pop("extra_body", None) or {}), **self.request_body()}
        chunks = self.client.stream_chat(list(messages), model=self.model, extra_body=extra_body, **request)
        return self.watch(chunks, messages)

    def watch(self, chunks: Iterable[Any], messages: list[dict]) -> Iterator[TokenEvent]:
        """Monitor a stream you started yourself (any openai chat stream sent with `extra_body=request_body()`)."""
        turn = TurnRecord(conversation=self.conversation_id, turn=len(self.turns), messages=list(messages))
        states = [_RuleState(rule) for rule in self.rules]
        token_index = 0
        pending: ProbeAlarm | None = None
        failed = False
        try:
            for chunk in chunks:
                applied = steering_applied(chunk)
                if applied and not turn.steering:
                    turn.steering = [asdict(a) for a in applied]
                text = chunk_text(chunk)
                turn.text += text
                reason = finish_reason(chunk)
                if reason:
                    turn.finish_reason = reason
                    turn.stopped_by_guard = reason == "content_filter"
                fired = guard_fired(chunk)
                for f in fired:
                    turn.guard_fired.append(f)
                    if self.on_guard is not None:
                        self.on_guard(f)
                token_scores: dict[str, float] = {}
                for name, result in probe_scores(chunk).items():
                    if result.is_aggregate:
                        turn.aggregates[name] = result.raw
                    elif result.score is not None:
                        token_scores[name] = result.score
                event = TokenEvent(text=text, token_index=None, scores=token_scores, guard=fired)
                if token_scores:
                    event.token_index = token_index
                    for name in self.probe_names:
                        turn.per_token.setdefault(name, []).append(token_scores.get(name))
                    event.alarms = self._check(states, token_scores, turn, token_index)
                    token_index += 1
                if text or token_scores or fired:
                    yield event
                if event.alarms and self.raise_on_alarm:
                    turn.stopped_by_alarm = True
                    pending = ProbeAlarm(event.alarms[0], turn)
                    break
            if pending is None:
                # rules whose probe had no live scores: judge them on the final results
                live = {name for name, scores in turn.per_token.items() if any(v is not None for v in scores)}
                self._check_aggregates([st for st in states if st.rule.probe not in live], turn)
                if turn.alarms and self.raise_on_alarm:
                    pending = ProbeAlarm(turn.alarms[0], turn)
        except GeneratorExit:
            raise  # the caller stopped reading: keep what came so far
        except BaseException:
            failed = True  # the request failed (or a callback raised): no turn to record
            raise
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # stops the server's generation when we leave early
            if not failed or turn.alarms:
                turn.seconds = time.time() - turn.started
                self.turns.append(turn)
                self._write(turn)
        if pending is not None:
            raise pending

    def _check(self, states: list[_RuleState], scores: dict[str, float], turn: TurnRecord, index: int) -> list[Alarm]:
        fired = []
        for state in states:
            if state.feed(scores.get(state.rule.probe)):
                alarm = Alarm(state.rule, turn.turn, index, tuple(state.run), turn.text)
                fired.append(alarm)
                turn.alarms.append(alarm)
                if self.on_alarm is not None:
                    self.on_alarm(alarm)
        return fired

    def _check_aggregates(self, states: list[_RuleState], turn: TurnRecord) -> None:
        """Judge rules on the final results: their per_token list if any, else the one score."""
        if not states:
            return
        readings: dict[str, list[float | None]] = {}
        for state in states:
            data = turn.aggregates.get(state.rule.probe) or {}
            per_token = data.get("per_token")
            if isinstance(per_token, list):
                readings[state.rule.probe] = [float(v) if isinstance(v, (int, float)) else None for v in per_token]
                turn.per_token[state.rule.probe] = readings[state.rule.probe]
            elif isinstance(data.get("score"), (int, float)):
                readings[state.rule.probe] = [float(data["score"])]  # a probe read once per reply
        length = max((len(v) for v in readings.values()), default=0)
        for index in range(length):
            scores = {n: v[index] for n, v in readings.items() if index < len(v) and v[index] is not None}
            self._check(states, scores, turn, index)

    def observe(self, response: Any, messages: list[dict]) -> "TurnRecord":
        """Record a whole (non-streamed) reply that someone else requested: a chat completion or a Responses object.

        For agent frameworks that make their own requests (see clients.harness);
        the request must have asked for the monitor's probes (`request_body()`).
        The rules are judged on the reply's per-token scores.
        """
        list(self.watch([_as_chunk(response)], messages))
        return self.turns[-1]

    def say(self, content: str, **options: Any) -> Iterator[TokenEvent]:
        """Add a user message, stream the reply, and keep it in the conversation."""
        self.messages.append({"role": "user", "content": content})
        turns_before = len(self.turns)
        try:
            yield from self.stream(self.messages, **options)
        finally:
            if len(self.turns) > turns_before:
                self.messages.append({"role": "assistant", "content": self.turns[-1].text})
            else:
                self.messages.pop()  # the request failed: the user can send it again

    def ask(self, content: str, **options: Any) -> TurnRecord:
        """`say()` without watching the stream: returns the finished turn."""
        for _ in self.say(content, **options):
            pass
        return self.turns[-1]

    def _write(self, turn: TurnRecord) -> None:
        if self.record_path is None:
            return
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(turn.to_json(), allow_nan=False, ensure_ascii=False)
        with self.record_path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


def read_record(path: str | Path) -> list[dict]:
    """The turns of a monitor's JSONL record."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _as_chunk(response: Any) -> dict:
    """A whole reply as one stream-like chunk the watcher reads: its text (or calls), finish reason, probes, steering."""
    data = response if isinstance(response, dict) else response.model_dump()
    if data.get("object") == "response":  # the Responses API: one answer, extension fields on the response
        texts = []
        for item in data.get("output") or []:
            if item.get("type") == "message":
                texts += [part.get("text", "") for part in item.get("content") or []]
            elif item.get("type") == "function_call":
                texts.append(json.dumps({"name": item.get("name"), "arguments": item.get("arguments")}))
        choice = {"index": 0, "delta": {"content": "".join(texts)}, "finish_reason": data.get("status"), "probes": data.get("probes")}
        return {"choices": [choice], "steering": data.get("steering")}
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    for call in message.get("tool_calls") or []:
        text += json.dumps({"name": call["function"]["name"], "arguments": call["function"]["arguments"]})
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": choice.get("finish_reason"), "probes": choice.get("probes")}],
            "steering": data.get("steering")}
