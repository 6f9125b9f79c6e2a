"""POST /v1/responses: the Responses API on top of the chat engine.

A request is translated into a chat-completions body (instructions and input
items become messages, function_call / function_call_output items become
assistant tool calls and tool messages, text.format becomes response_format)
and validated by the same code as /v1/chat/completions, so steering, probes
and every limit behave the same. Errors keep the Responses field names.

Nothing is stored: `store: true`, `previous_response_id` and `conversation`
are refused with a 400 (send the whole conversation in `input`).
"""

from __future__ import annotations

import secrets

from . import response_format, tools
from .errors import BadRequest
from .events import ChoiceEnd, TokenOut
from .jsonio import dumps
from .protocol import CHAT, now

PASSED_THROUGH = ("model", "temperature", "top_p", "stream", "user", "steer", "probes", "guard", "parallel_tool_calls", "seed", "top_k", "min_p")
NOT_KEPT = ("previous_response_id", "conversation")
REFUSED = ("background", "prompt", "reasoning", "include")
# Chat field names in validation messages -> the Responses field a client sent.
PARAM_NAMES = {"messages": "input", "response_format": "text.format", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens"}
TEXT_PARTS = ("input_text", "output_text", "text")


def _rename(err: BadRequest) -> BadRequest:
    if err.param in PARAM_NAMES:
        err.param = PARAM_NAMES[err.param]
    return err


def _content(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest(f"{where}.content must be a string or a list of text parts", param="input")
    parts = []
    for j, part in enumerate(value):
        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS or not isinstance(part.get("text"), str):
            raise BadRequest(f"{where}.content[{j}] must be an input_text or output_text part; only text is supported", param="input")
        parts.append(part["text"])
    return "".join(parts)


def input_messages(body: dict) -> list[dict]:
    """instructions + input -> chat messages (OpenAI's chat shape, tool calls included)."""
    messages = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("instructions must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        return messages + [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise BadRequest("input must be a string or a non-empty list of input items", param="input")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise BadRequest(f"{where}.role must be user, assistant, system or developer, got {str(role)[:30]!r}", param="input")
            messages.append({"role": role, "content": _content(item.get("content"), where)})
        elif kind == "function_call":
            call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
            if not all(isinstance(v, str) for v in (call_id, name, args)):
                raise BadRequest(f"{where} (function_call) needs string call_id, name and arguments", param="input")
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)  # consecutive calls are one assistant turn
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str):
                raise BadRequest(f"{where} (function_call_output) needs a string call_id", param="input")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _content(output, where)})
        else:
            raise BadRequest(f"{where}.type {str(kind)[:40]!r} is not supported; use message, function_call or function_call_output", param="input")
    return messages


def _tool_choice(value):
    """Responses' {"type": "function", "name": N} -> chat's {"type": "function", "function": {"name": N}}."""
    if isinstance(value, dict) and value.get("type") == "function" and "function" not in value:
        return {"type": "function", "function": {"name": value.get("name")}}
    return value


def _tools(value):
    if not isinstance(value, list):
        return value
    out = []
    for t in value:
        if isinstance(t, dict) and t.get("type") == "function" and "function" not in t:
            fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}
            out.append({"type": "function", "function": fn})
        else:
            out.append(t)
    return out


def chat_body(body: dict, max_schema_chars: int) -> tuple[dict, dict | None]:
    """The equivalent chat-completions body, and the text.format given (echoed in the response)."""
    if body.get("store") is True:
        raise BadRequest("store: true is not supported: this server keeps no responses (send the whole conversation in input)", param="store")
    for name in NOT_KEPT:
        if body.get(name) is not None:
            raise BadRequest(f"{name} is not supported: this server keeps no responses or conversations; send the whole conversation in input", param=name)
    for name in REFUSED:
        if body.get(name) not in (None, [], {}):
            raise BadRequest(f"{name} is not supported by this server", param=name)
    out = {k: body[k] for k in PASSED_THROUGH if k in body}
    out["messages"] = input_messages(body)
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    if body.get("tools") is not None:
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    text = body.get("text")
    fmt = None
    if text is not None:
        if not isinstance(text, dict):
            raise BadRequest("text must be an object like {\"format\": {...}}", param="text")
        fmt = text.get("format")
        answer = response_format.parse_text_format(fmt, max_schema_chars)  # checks with Responses' names
        if answer is not None:
            out["response_format"] = {"type": "json_schema", "json_schema": {"name": fmt.get("name") or "answer", "schema": answer.schema}}
    return out, fmt


def parse(body: dict, headers, ctx, parse_request):
    """-> (GenerationSpec for the chat engine, ResponseShape)."""
    try:
        chat, fmt = chat_body(body, ctx.limits.max_schema_chars)
        spec = parse_request(chat, headers, CHAT, ctx)
    except BadRequest as err:
        raise _rename(err) from None
    if len(spec.choices) != 1:
        raise BadRequest("the Responses API returns one answer; n is not supported", param="n")
    return spec, ResponseShape(body, fmt)


# -- output ------------------------------------------------------------------------------------------------


class ResponseShape:
    """The request fields a Response echoes, and the ids of its items."""

    def __init__(self, body: dict, fmt: dict | None):
        self.body = body
        self.format = fmt or {"type": "text"}
        self.id = "resp_" + secrets.token_hex(16)
        self.message_id = "msg_" + secrets.token_hex(16)
        self.created = now()

    def response(self, spec, status: str, output: list, *, usage=None, incomplete=None, extras=None) -> dict:
        b = self.body
        out = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "completed_at": now() if status in ("completed", "incomplete") else None,
            "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "model": spec.model,
            "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "store": False,
            "temperature": b.get("temperature", 1.0),
            "text": {"format": self.format},
            "tool_choice": b.get("tool_choice", "auto"),
            "tools": b.get("tools") or [],
            "top_p": b.get("top_p", 1.0),
            "truncation": "disabled",
            "metadata": b.get("metadata") or {},
        }
        if usage is not None:  # the schema has no null usage: an in-progress response leaves it out
            out["usage"] = usage
        out.update(extras or {})
        return out

    def message_item(self, text: str, status: str) -> dict:
        return {"id": self.message_id, "type": "message", "role": "assistant", "status": status,
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}

    @staticmethod
    def call_item(call: dict, status: str = "completed") -> dict:
        return {"id": "fc_" + call["id"].removeprefix("call_"), "type": "function_call", "status": status, "call_id": call["id"],
                "name": call["function"]["name"], "arguments": call["function"]["arguments"]}

    def output_items(self, spec, text: str, finish_reason: str | None) -> tuple[list, str, str | None]:
        """(output items, status, incomplete reason) of a finished answer."""
        content, calls, finish = tools.finish(spec.output, text, finish_reason)
        incomplete = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish)
        status = "incomplete" if incomplete else "completed"
        items = [self.call_item(c) for c in calls]
        if not calls:
            items = [self.message_item(content or "", status)]
        return items, status, incomplete


def usage(prompt_tokens: int, completion_tokens: int, cached: int = 0) -> dict:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def extension_fields(spec, state) -> dict:
    """steering / probes / guard extension fields, as on a chat choice, on the Response itself."""
    out = {"steering": {"applied": spec.steering_applied}}
    if spec.probes:
        out["probes"] = state.readings.result()
    if spec.choices[0].guard:  # the rules asked for: what fired (maybe nothing), as on a chat choice
        out["guard"] = {"fired": state.guard_fired}
    return out


def whole(run, shape: ResponseShape) -> dict:
    spec = run.spec
    st = run.choices[spec.choices[0].index]
    items, status, incomplete = shape.output_items(spec, "".join(st.text), st.finish_reason)
    return shape.response(spec, status, items, usage=usage(spec.prompt_tokens, run.completion_tokens),
                          incomplete=incomplete, extras=extension_fields(spec, st))


async def stream(run, shape: ResponseShape):
    """The Responses event stream: created, in_progress, the output item(s) with text deltas, completed."""
    spec = run.spec
    index = spec.choices[0].index
    st = run.choices[index]
    seq = 0

    def event(kind: str, **fields) -> bytes:
        nonlocal seq
        payload = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(payload) + b"\n\n"

    base = shape.response(spec, "in_progress", [], extras={"steering": {"applied": spec.steering_applied}})
    yield event("response.created", response=base)
    yield event("response.in_progress", response=base)
    opened = False  # the message item has been announced (text is streaming)

    def open_message():
        item = shape.message_item("", "in_progress")
        item["content"] = []
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [event("response.output_item.added", output_index=0, item=item),
                event("response.content_part.added", item_id=shape.message_id, output_index=0, content_index=0, part=part)]

    try:
        async for ev in run.events():
            if isinstance(ev, TokenOut):
                if spec.output is not None and spec.output.may_call("".join(st.text)):
                    continue  # possibly a call: it goes out whole at the end
                if not opened:
                    opened = True
                    for b in open_message():
                        yield b
                fields = {}
                if ev.reading is not None:
                    live = st.readings.best(ev.reading)
                    if live:
                        fields["probes"] = live
                if getattr(ev, "guard", None):
                    fields["guard"] = {"fired": ev.guard}
                if ev.text or fields:
                    yield event("response.output_text.delta", item_id=shape.message_id, output_index=0, content_index=0,
                                delta=ev.text, logprobs=[], **fields)
            elif isinstance(ev, ChoiceEnd) and ev.text:
                if spec.output is not None and spec.output.may_call("".join(st.text)):
                    continue
                if not opened:
                    opened = True
                    for b in open_message():
                        yield b
                yield event("response.output_text.delta", item_id=shape.message_id, output_index=0, content_index=0,
                            delta=ev.text, logprobs=[])
    except Exception as exc:  # noqa: BLE001 - headers are gone: report in-band
        from .errors import as_api_error

        err = as_api_error(exc)
        failed = shape.response(spec, "failed", [])
        failed["error"] = {"code": err.code or "server_error", "message": err.message}
        yield event("response.failed", response=failed)
        return
    text = "".join(st.text)
    items, status, incomplete = shape.output_items(spec, text, st.finish_reason)
    for k, item in enumerate(items):
        if item["type"] == "message":
            if not opened:
                for b in open_message():
                    yield b
            part = item["content"][0]
            yield event("response.output_text.done", item_id=item["id"], output_index=k, content_index=0, text=part["text"], logprobs=[])
            yield event("response.content_part.done", item_id=item["id"], output_index=k, content_index=0, part=part)
        else:
            pending = {**item, "status": "in_progress", "arguments": ""}
            yield event("response.output_item.added", output_index=k, item=pending)
            yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=k, delta=item["arguments"])
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=k, name=item["name"], arguments=item["arguments"])
        yield event("response.output_item.done", output_index=k, item=item)
    final = shape.response(spec, status, items, usage=usage(spec.prompt_tokens, run.completion_tokens),
                           incomplete=incomplete, extras=extension_fields(spec, st))
    yield event("response.completed" if status == "completed" else "response.incomplete", response=final)
