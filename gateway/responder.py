"""Engine events -> OpenAI responses: one whole response, or a stream of SSE chunks.

Runs on the event loop. Waiting never blocks the loop, and a client that goes
away marks its job cancelled so the model thread drops its rows at the next step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.responses import StreamingResponse

from . import tools
from .echo_logprobs import echoed_logprobs
from .events import ChoiceEnd, Failed, Job, PromptRead, TokenOut
from .jsonio import dumps
from .probe_spec import ProbeReadings
from .protocol import (
    CHAT,
    GenerationSpec,
    chat_logprob_entry,
    chunk,
    completion_response,
    new_id,
    now,
    steering_field,
    text_logprobs,
    usage,
)

DISCONNECT_POLL_S = 0.1


@dataclass
class ChoiceState:
    index: int
    readings: ProbeReadings
    text: list = field(default_factory=list)
    logprobs: list = field(default_factory=list)  # (token_text, logprob, top)
    prompt_logprobs: list = field(default_factory=list)  # the echoed prompt's entries, when asked
    finish_reason: str | None = None
    completion_tokens: int = 0
    guard_fired: list = field(default_factory=list)  # api.md section 4b


class Run:
    """One request's progress through the engine."""

    def __init__(self, engine, spec: GenerationSpec, on_finish=None):
        self.spec = spec
        self.on_finish = on_finish  # called with the completion token count when every choice ended
        self.job = Job(spec, asyncio.get_running_loop(), asyncio.Queue())
        self.choices = {c.index: ChoiceState(c.index, ProbeReadings(spec.probes)) for c in spec.choices}
        self.open = len(spec.choices)
        self.id = new_id(spec.kind)
        self.created = now()
        engine.submit(self.job)

    def cancel(self) -> None:
        self.job.cancelled = True

    async def events(self):
        """Yield engine events until every choice has ended; raises the APIError of a failed request."""
        while self.open:
            for ev in await self.job.events.get():
                if isinstance(ev, Failed):
                    self.open = 0
                    raise ev.error
                self._apply(ev)
                yield ev

    def _apply(self, ev) -> None:
        st = self.choices[ev.index]
        if isinstance(ev, PromptRead):
            st.readings.prompt = ev.reading
            st.readings.tokens.extend(ev.token_readings)
            st.prompt_logprobs = ev.prompt_logprobs or []
        if getattr(ev, "guard", None):
            st.guard_fired.extend(ev.guard)
        if isinstance(ev, TokenOut):
            st.text.append(ev.text)
            st.completion_tokens += 1
            if ev.logprob is not None:
                st.logprobs.append((ev.token_text, ev.logprob, ev.top))
            if ev.reading is not None:
                st.readings.tokens.append(ev.reading)
        elif isinstance(ev, ChoiceEnd):
            st.text.append(ev.text)
            st.finish_reason = ev.finish_reason
            st.completion_tokens = ev.completion_tokens
            self.open -= 1
            if not self.open and self.on_finish is not None:
                self.on_finish(self.completion_tokens)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices.values())

    # -- whole responses ---------------------------------------------------------------
    def response(self) -> dict:
        spec = self.spec
        choices = []
        for i, c in enumerate(spec.choices):
            st = self.choices[c.index]
            text = "".join(st.text)
            item = {"index": c.index, "finish_reason": st.finish_reason}
            if spec.kind == CHAT:
                content, calls, item["finish_reason"] = tools.finish(spec.output, text, st.finish_reason)
                item["message"] = {"role": "assistant", "content": content, "refusal": None}
                if calls:
                    item["message"]["tool_calls"] = calls
                item["logprobs"] = (
                    {"content": [chat_logprob_entry(*e) for e in st.logprobs], "refusal": None}
                    if spec.sampling.logprobs
                    else None
                )
            else:
                prefix = spec.prompt_texts[i] if spec.echo else ""
                item["text"] = prefix + text
                item["logprobs"] = (
                    echoed_logprobs(st.prompt_logprobs, st.logprobs, len(prefix), spec.sampling.top_logprobs > 0)
                    if spec.sampling.logprobs
                    else None
                )
            if spec.probes:
                item["probes"] = st.readings.result()
            if c.guard:
                item["guard"] = {"fired": st.guard_fired}
            choices.append(item)
        return completion_response(spec, self.id, self.created, choices, self.completion_tokens)

    # -- streams ------------------------------------------------------------------------
    def _position(self, index: int) -> int:
        return next(i for i, c in enumerate(self.spec.choices) if c.index == index)

    def _chunk(self, choices: list[dict], **extra) -> bytes:
        return b"data: " + dumps(chunk(self.spec, self.id, self.created, choices, **extra)) + b"\n\n"

    def _choice(self, index: int, text: str | None, finish=None, role: bool = False) -> dict:
        if self.spec.kind == CHAT:
            delta = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "finish_reason": finish}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}

    async def stream(self):
        spec = self.spec
        if spec.kind == CHAT:
            yield self._chunk([self._choice(c.index, "", role=True) for c in spec.choices], steering=steering_field(spec))
        elif spec.echo and not spec.sampling.logprobs:
            yield self._chunk([self._choice(c.index, spec.prompt_texts[i]) for i, c in enumerate(spec.choices)])
        try:
            async for ev in self.events():
                if isinstance(ev, PromptRead) and spec.kind != CHAT and spec.echo and spec.sampling.logprobs:
                    # the echoed prompt waits for its prefill, which scores it
                    item = self._choice(ev.index, spec.prompt_texts[self._position(ev.index)])
                    item["logprobs"] = echoed_logprobs(ev.prompt_logprobs or [], [], 0, spec.sampling.top_logprobs > 0)
                    yield self._chunk([item])
                elif isinstance(ev, TokenOut):
                    held = spec.output is not None and spec.output.may_call("".join(self.choices[ev.index].text))
                    item = self._choice(ev.index, None if held else ev.text)  # calls go out whole at the end
                    if ev.logprob is not None:
                        entry = (ev.token_text, ev.logprob, ev.top)
                        if spec.kind == CHAT:
                            item["logprobs"] = {"content": [chat_logprob_entry(*entry)], "refusal": None}
                        else:
                            item["logprobs"] = text_logprobs([entry], 0, spec.sampling.top_logprobs > 0)
                    live = self.choices[ev.index].readings.best(ev.reading) if ev.reading is not None else None
                    if live:  # token probes only: the others are read once, in the final chunk
                        item["probes"] = live
                    if ev.guard:
                        item["guard"] = {"fired": ev.guard}
                    if (ev.text and not held) or "logprobs" in item or "probes" in item or "guard" in item:
                        yield self._chunk([item])
                elif isinstance(ev, ChoiceEnd):
                    st = self.choices[ev.index]
                    finish, tail = ev.finish_reason, ev.text
                    if spec.output is not None and spec.output.may_call("".join(st.text)):
                        content, calls, finish = tools.finish(spec.output, "".join(st.text), ev.finish_reason)
                        if calls:
                            yield self._chunk([{"index": ev.index, "delta": {"tool_calls": tools.call_deltas(calls)}, "finish_reason": None}])
                            tail = None
                        else:
                            tail = content  # not calls after all (cut off): the held text goes out now
                    item = self._choice(ev.index, tail, finish=finish)
                    if spec.probes:
                        item["probes"] = st.readings.result()
                    if ev.guard:
                        item["guard"] = {"fired": ev.guard}
                    yield self._chunk([item], steering=steering_field(spec))
        except Exception as exc:  # noqa: BLE001 - headers are gone: report in-band, as OpenAI does
            from .errors import as_api_error

            yield b"data: " + dumps(as_api_error(exc).body()) + b"\n\n"
            yield b"data: [DONE]\n\n"  # the stream still ends the way clients wait for
            return
        if spec.include_usage:
            yield self._chunk([], usage=usage(spec.prompt_tokens, self.completion_tokens))
        yield b"data: [DONE]\n\n"


async def wait_for_response(run: Run, request) -> dict | None:
    """Collect a non-streamed run; None if the client disconnected (its rows are then dropped)."""

    async def consume():
        async for _ in run.events():
            pass

    async def watch():
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)

    work = asyncio.ensure_future(consume())
    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            work.result()  # raises the request's APIError
            return run.response()
        run.cancel()
        return None
    finally:
        for t in (work, watcher):
            t.cancel()
        if run.open:
            run.cancel()


class SSEResponse(StreamingResponse):
    """A stream that cancels its run however it ends (finished, client gone, server stopping)."""

    def __init__(self, run: Run, content=None, **kwargs):
        content = run.stream() if content is None else content
        super().__init__(content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}, **kwargs)
        self.run = run

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.run.cancel()
