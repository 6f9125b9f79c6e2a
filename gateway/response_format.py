"""`response_format` (chat) and `text.format` (Responses) -> the grammar the answer must follow."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .constraints import Grammar, check_grammar, schema_grammar
from .errors import BadRequest

SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ANY_OBJECT = {"type": "object"}


@dataclass(frozen=True)
class AnswerFormat:
    """A JSON answer: its schema (tools combine it with calls) and its checked grammar."""

    schema: dict
    grammar: Grammar


def _answer(schema: dict, param: str) -> AnswerFormat:
    # strict or not, the answer is constrained: strict only promises what we always do.
    return AnswerFormat(schema, check_grammar(schema_grammar(schema), param, "response_format"))


def schema_size_check(schema, param: str, max_chars: int) -> None:
    size = len(json.dumps(schema))
    if size > max_chars:
        raise BadRequest(f"{param} is {size} characters of JSON; the limit is {max_chars} (--max-schema-chars)", param=param)


def json_schema_format(name, schema, strict, param: str, max_chars: int) -> AnswerFormat:
    """The json_schema format's parts, wherever they sit (nested under json_schema in chat, flat in Responses)."""
    if not isinstance(name, str) or not SCHEMA_NAME.match(name):
        raise BadRequest(f"{param}.name must be 1-64 characters of a-z, A-Z, 0-9, _ or -, got {str(name)[:70]!r}", param=f"{param}.name")
    if strict is not None and not isinstance(strict, bool):
        raise BadRequest(f"{param}.strict must be true or false, got {strict!r}", param=f"{param}.strict")
    if schema is None:
        schema = ANY_OBJECT
    if not isinstance(schema, dict):
        raise BadRequest(f"{param}.schema must be a JSON Schema object, got {str(schema)[:60]!r}", param=f"{param}.schema")
    schema_size_check(schema, f"{param}.schema", max_chars)
    return _answer(schema, f"{param}.schema")


def parse_chat(value, max_chars: int) -> AnswerFormat | None:
    """Chat Completions' response_format; None for plain text (json_schema's fields sit under json_schema)."""
    return _parse_format(value, "response_format", nested=True, max_chars=max_chars)


def parse_text_format(value, max_chars: int) -> AnswerFormat | None:
    """The Responses API's text.format (json_schema's fields sit on the format itself)."""
    return _parse_format(value, "text.format", nested=False, max_chars=max_chars)


def _parse_format(value, param: str, *, nested: bool, max_chars: int) -> AnswerFormat | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise BadRequest(f"{param} must be an object with a type, got {str(value)[:60]!r}", param=param)
    kind = value["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return _answer(ANY_OBJECT, param)
    if kind == "json_schema":
        spec, where = value, param
        if nested:
            spec, where = value.get("json_schema"), f"{param}.json_schema"
            if not isinstance(spec, dict):
                raise BadRequest(f"{where} must be an object with name and schema", param=where)
        return json_schema_format(spec.get("name"), spec.get("schema"), spec.get("strict"), where, max_chars)
    raise BadRequest(f"{param}.type must be text, json_object or json_schema, got {kind[:40]!r}", param=f"{param}.type")
