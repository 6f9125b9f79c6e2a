"""Function tools: parsing `tools` / `tool_choice`, rendering them into the prompt, constraining and reading the calls.

A template with its own tool format that mlx-lm names (json_tools family) renders
the tools itself and frames the calls (tool_formats.JsonToolsFormat). How tools
reach a model whose chat template has no tool format (the default SmolLM2 has
none), the "generic" format, documented in docs/structured-output.md:
  - a system message lists the functions (name, description, JSON Schema of
    the parameters) and says: to call a function, reply with only
    {"name": ..., "arguments": {...}} (or a JSON array of such objects when
    parallel calls are allowed);
  - earlier assistant calls are rendered as that same JSON, and tool results
    as messages of role "tool";
  - the answer is constrained by the grammar: with tool_choice "required" it
    must be calls; a named function, exactly one call to it; "auto", either
    calls or a text answer that does not start with "{" or "[" (or, with a
    response_format, calls or the formatted JSON answer); "none" renders no
    tools and constrains nothing.
Call arguments therefore always match the function's parameter schema.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from .constraints import Grammar, check_grammar, json_in_lark, lark_grammar, schema_grammar
from .errors import BadRequest
from .response_format import AnswerFormat, schema_size_check
from .tool_formats import GenericFormat, JsonToolsFormat

GENERIC = GenericFormat()

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHOICES = ("auto", "none", "required")
MAX_PARALLEL_CALLS = 8  # calls one answer may hold when parallel_tool_calls is on
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict


@dataclass(frozen=True)
class ToolSet:
    tools: tuple[Tool, ...]
    choice: str  # "auto" | "none" | "required" | "function" (then `forced` names it)
    parallel: bool
    forced: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != "none"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tools)


# -- parsing --------------------------------------------------------------------------------------------


def parse_tools(value, *, flat: bool, max_tools: int, max_schema_chars: int) -> tuple[Tool, ...]:
    """Chat's [{"type": "function", "function": {...}}] or, with flat, Responses' [{"type": "function", "name": ...}]."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest(f"tools must be a list of function tools, got {str(value)[:60]!r}", param="tools")
    if len(value) > max_tools:
        raise BadRequest(f"tools has {len(value)} entries; the limit is {max_tools} (--max-tools)", param="tools")
    out, seen = [], set()
    for i, item in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(item, dict) or item.get("type") != "function":
            kind = item.get("type") if isinstance(item, dict) else item
            raise BadRequest(f"{where}.type must be \"function\" (only function tools are supported), got {str(kind)[:40]!r}", param="tools")
        fn = item if flat else item.get("function")
        fwhere = where if flat else f"{where}.function"
        if not isinstance(fn, dict):
            raise BadRequest(f"{fwhere} must be an object with name and parameters", param="tools")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise BadRequest(f"{fwhere}.name must be 1-64 characters of a-z, A-Z, 0-9, _ or -, got {str(name)[:70]!r}", param="tools")
        if name in seen:
            raise BadRequest(f"{fwhere}.name {name!r} is given twice", param="tools")
        seen.add(name)
        desc = fn.get("description") or ""
        if not isinstance(desc, str):
            raise BadRequest(f"{fwhere}.description must be a string", param="tools")
        params = fn.get("parameters")
        if params is None:
            params = NO_PARAMETERS
        if not isinstance(params, dict):
            raise BadRequest(f"{fwhere}.parameters must be a JSON Schema object, got {str(params)[:60]!r}", param="tools")
        schema_size_check(params, f"{fwhere}.parameters", max_schema_chars)
        check_grammar(schema_grammar(params), f"{fwhere}.parameters", "tools")
        if params.get("type", "object") != "object":
            raise BadRequest(f"{fwhere}.parameters must describe an object (type \"object\"), got type {params.get('type')!r}", param="tools")
        out.append(Tool(name, desc, params))
    return tuple(out)


def parse_choice(value, tools: tuple[Tool, ...], parallel, *, flat: bool) -> ToolSet:
    if parallel is None:
        parallel = True
    if not isinstance(parallel, bool):
        raise BadRequest(f"parallel_tool_calls must be true or false, got {parallel!r}", param="parallel_tool_calls")
    if value is None:
        return ToolSet(tools, "auto" if tools else "none", parallel)
    if isinstance(value, str):
        if value not in CHOICES:
            raise BadRequest(f"tool_choice must be auto, none, required or a named function, got {value[:40]!r}", param="tool_choice")
        if value == "required" and not tools:
            raise BadRequest("tool_choice is required but no tools are given", param="tool_choice")
        return ToolSet(tools, value, parallel)
    if isinstance(value, dict) and value.get("type") == "function":
        fn = value if flat else value.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            shape = '{"type": "function", "name": ...}' if flat else '{"type": "function", "function": {"name": ...}}'
            raise BadRequest(f"tool_choice naming a function must be {shape}", param="tool_choice")
        if name not in {t.name for t in tools}:
            raise BadRequest(f"tool_choice names function {name[:64]!r}, which is not in tools", param="tool_choice")
        return ToolSet(tools, "function", parallel, forced=name)
    raise BadRequest(f"tool_choice must be auto, none, required or a named function, got {str(value)[:60]!r}", param="tool_choice")


def history_calls(message: dict, where: str, known_ids: set) -> list[dict]:
    """An assistant message's tool_calls, checked; their ids join known_ids."""
    calls = message.get("tool_calls")
    if calls in (None, []):
        return []
    if not isinstance(calls, list):
        raise BadRequest(f"{where}.tool_calls must be a list", param="messages")
    out = []
    for j, c in enumerate(calls):
        cw = f"{where}.tool_calls[{j}]"
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not isinstance(fn, dict):
            raise BadRequest(f"{cw} must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}", param="messages")
        if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", ""), str):
            raise BadRequest(f"{cw}.function needs a string name and a JSON-string arguments", param="messages")
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            raise BadRequest(f"{cw}.function.arguments is not valid JSON", param="messages") from None
        known_ids.add(c["id"])
        out.append({"id": c["id"], "name": fn["name"], "arguments": args})
    return out


def check_tool_message(message: dict, where: str, known_ids: set) -> str:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise BadRequest(f"{where} (role tool) needs tool_call_id, the id of the call it answers", param="messages")
    if call_id not in known_ids:
        raise BadRequest(f"{where}.tool_call_id {call_id[:64]!r} matches no earlier assistant tool call", param="messages")
    return call_id


# -- rendering (generic format) ---------------------------------------------------------------------------


def call_text(calls: list[dict]) -> str:
    items = [{"name": c["name"], "arguments": c["arguments"]} for c in calls]
    return json.dumps(items[0] if len(items) == 1 else items, separators=(",", ":"))


def system_text(ts: ToolSet) -> str:
    lines = ["You can call these functions:"]
    for t in ts.tools:
        lines.append(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}, separators=(",", ":")))
    lines.append('To call a function, reply with only a JSON object: {"name": <function name>, "arguments": <arguments object>}.')
    if ts.parallel:
        lines.append("To call several functions at once, reply with a JSON array of such objects.")
    if ts.choice == "auto":
        lines.append("If no function is needed, answer in plain text.")
    return "\n".join(lines)


def render(messages: list[dict], ts: ToolSet, fmt=GENERIC) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) for the chat template.

    Generic format: calls as JSON text, the tool list in the system message, no tools argument.
    A template with its own format gets the tools and the calls in the shape templates expect.
    """
    if fmt.template_renders_tools:
        return _native(messages), ([_template_tool(t) for t in ts.tools] if ts.active else None)
    out = []
    for m in messages:
        m = dict(m)
        calls = m.pop("tool_calls", None)
        m.pop("tool_call_id", None)
        if calls:
            m["content"] = (m["content"] + "\n" if m["content"] else "") + call_text(calls)
        out.append(m)
    if ts.active:
        text = system_text(ts)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out, None


def _template_tool(t: Tool) -> dict:
    return {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}


def _native(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        m = dict(m)
        calls = m.pop("tool_calls", None)
        if calls:
            m["tool_calls"] = [{"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                               for c in calls]
        out.append(m)
    return out


# -- the grammar --------------------------------------------------------------------------------------------


def _one_call(t: Tool) -> dict:
    return {
        "type": "object",
        "properties": {"name": {"const": t.name}, "arguments": t.parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def calls_schema(ts: ToolSet) -> dict:
    tools = [t for t in ts.tools if ts.forced in (None, t.name)]
    one = _one_call(tools[0]) if len(tools) == 1 else {"anyOf": [_one_call(t) for t in tools]}
    if not ts.parallel or ts.forced is not None:
        return one
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}]}


def grammar(ts: ToolSet, answer: AnswerFormat | None, fmt=GENERIC) -> Grammar | None:
    """The whole answer's grammar, or None when tools do not constrain it (then response_format alone may)."""
    if not ts.active:
        return answer.grammar if answer is not None else None
    if isinstance(fmt, JsonToolsFormat):
        single = ts.forced is not None or not ts.parallel
        one = calls_schema(ToolSet(ts.tools, ts.choice, False, ts.forced))  # one call; the frame repeats it
        calls = fmt.calls_rule(json_in_lark(one), parallel=not single)
    else:
        calls = GENERIC.calls_rule(json_in_lark(calls_schema(ts)), ts.parallel)
    if ts.choice in ("required", "function"):
        return check_grammar(lark_grammar(f"start: calls\n{calls}\n"), "tools", "tools")
    # auto: calls, or an answer that cannot be mistaken for them
    other = f"answer: {json_in_lark(answer.schema)}" if answer is not None else f"answer: TEXT\n{fmt.text_rule}"
    lark = f"start: calls | answer\n{calls}\n{other}\n"
    return check_grammar(lark_grammar(lark), "tools", "tools")


# -- reading the answer ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolOutput:
    """How a finished answer's text becomes tool calls."""

    tools: ToolSet
    format: object = GENERIC

    def may_call(self, text_so_far: str) -> bool:
        """Whether an answer that starts like this may be calls (a stream holds such text back)."""
        return self.tools.active and (self.format.may_call(text_so_far.lstrip()) or self.tools.choice in ("required", "function"))

    def split(self, text: str) -> tuple[str | None, list[dict]]:
        """(content, calls): calls as OpenAI tool_calls, arguments as JSON strings."""
        if not self.tools.active:
            return text, []
        items = self.format.items(text)
        if items is None:
            return text, []  # text, or calls cut off by max_tokens: the text as it is, finish_reason says length
        names = set(self.tools.names)
        if not items or not all(isinstance(c, dict) and set(c) == {"name", "arguments"} and c["name"] in names for c in items):
            return text, []  # a JSON answer (response_format), not calls
        calls = [
            {"id": "call_" + secrets.token_hex(12), "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], separators=(",", ":"))}}
            for c in items
        ]
        return None, calls


def finish(output: ToolOutput | None, text: str, finish_reason: str | None) -> tuple[str | None, list[dict], str | None]:
    """(content, tool_calls, finish_reason) of a finished chat choice: calls that completed end with "tool_calls"."""
    if output is None:
        return text, [], finish_reason
    content, calls = output.split(text)
    if calls and finish_reason == "stop":
        return content, calls, "tool_calls"
    return (text, [], finish_reason) if not calls else (content, calls, finish_reason)


def call_deltas(calls: list[dict]) -> list[dict]:
    """Stream deltas for finished calls: each call whole, with its index."""
    return [{"index": k, **c} for k, c in enumerate(calls)]
