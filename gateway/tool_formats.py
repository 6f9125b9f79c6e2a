"""How tool calls look in a model's text: the generic JSON format, or the model's own (mlx-lm's json_tools family).

A format knows four things: whether the chat template renders the tools itself
(then it gets `tools=` and the calls in OpenAI's shape), the Lark rule that
frames one call's JSON (`{"name", "arguments"}`), how a run of calls is
joined, and how to cut the calls back out of finished text.

- `GenericFormat`: the whole answer is the JSON call, or a JSON array of
  calls (docs/structured-output.md); used where the template has no tool format.
- `JsonToolsFormat`: mlx-lm's `json_tools` parser family (Qwen 2.5/3, Hermes
  and others whose template writes `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`):
  each call framed by the template's own markers, calls one after another.
"""

from __future__ import annotations

import json
import re

JSON_TOOLS_MODULE = "mlx_lm.tool_parsers.json_tools"


def _lark_string(text: str) -> str:
    return json.dumps(text)  # a Lark string literal is a JSON string


class GenericFormat:
    name = "generic"
    template_renders_tools = False
    text_rule = "TEXT: /[^{\\[\\s](?s:.*)/"  # an answer in text must not look like the start of a call

    def calls_rule(self, one_call_json: str, parallel: bool) -> str:
        # the JSON schema (one call, or an array of them) is given whole by the caller
        return f"calls: {one_call_json}"

    def may_call(self, head: str) -> bool:
        return head[:1] in ("{", "[")

    def items(self, text: str):
        """The call objects in finished text, or None when the text is not calls."""
        stripped = text.strip()
        if stripped[:1] not in ("{", "["):
            return None
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else [value]


class JsonToolsFormat:
    name = "json_tools"
    template_renders_tools = True
    text_rule = "TEXT: /[^<\\s](?s:.*)/"  # an answer in text must not start like the call marker

    def __init__(self, start: str, end: str):
        self.start, self.end = start, end
        self._block = re.compile(re.escape(start) + r"\s*(.*?)\s*" + re.escape(end), re.S)

    def calls_rule(self, one_call_json: str, parallel: bool) -> str:
        call = f"call: {_lark_string(self.start + chr(10))} body {_lark_string(chr(10) + self.end)}\nbody: {one_call_json}"
        joined = 'calls: call ("\\n" call)*' if parallel else "calls: call"
        return f"{joined}\n{call}"

    def may_call(self, head: str) -> bool:
        return head[:1] == self.start[:1]

    def items(self, text: str):
        stripped = text.strip()
        if not stripped.startswith(self.start):
            return None
        blocks = self._block.findall(stripped)
        if not blocks or self._block.sub("", stripped).strip():
            return None  # unfinished, or text outside the calls
        try:
            return [json.loads(b) for b in blocks]
        except json.JSONDecodeError:
            return None


def for_tokenizer(tokenizer):
    """The model's own format where mlx-lm names one this server can constrain; the generic one otherwise."""
    parser = getattr(tokenizer, "tool_parser", None)
    start, end = getattr(tokenizer, "tool_call_start", None), getattr(tokenizer, "tool_call_end", None)
    if parser is not None and getattr(parser, "__module__", "") == JSON_TOOLS_MODULE and start and end:
        return JsonToolsFormat(start, end)
    return GenericFormat()
