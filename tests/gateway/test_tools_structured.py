"""Structured output and function tools through a real server (tiny random model) and the official openai client.

The tiny model's weights are random, so whatever it emits comes from the
grammar: valid JSON matching the schema here means the masks did their job.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest

from conftest import API_KEY
from gateway_helpers import sse_events, validate

pytestmark = pytest.mark.server

EOS_BAN = {"258": -100}  # the tiny tokenizer's <|im_end|>: text answers run to max_tokens

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "colour": {"type": "string", "enum": ["red", "green", "blue"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "zip": {"type": "integer", "minimum": 0, "maximum": 99999}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "nickname": {"type": ["string", "null"], "maxLength": 8},
    },
    "required": ["name", "age", "colour", "tags", "address"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 8}}, "required": ["zone"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture()
def oai(tiny_server):
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=API_KEY, timeout=120, max_retries=0)


def _check_calls(calls, names=None):
    assert calls, "expected tool calls"
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert names is None or call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


# -- response_format ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_json_schema_with_nested_objects_arrays_enums_and_required_fields(oai, seed):
    r = oai.chat.completions.create(
        model="default", messages=ASK, max_tokens=400, temperature=1.0, seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
    )
    validate(r.model_dump(exclude_unset=True), "CreateChatCompletionResponse")
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


def test_json_object_is_an_object(oai):
    r = oai.chat.completions.create(model="default", messages=ASK, max_tokens=300, temperature=0, logit_bias=EOS_BAN,
                                    response_format={"type": "json_object"})
    choice = r.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content), dict)
    else:  # a random model may write one long string: then it says so
        assert choice.finish_reason == "length"
        assert choice.message.content.startswith("{")


def test_a_schema_that_cannot_finish_within_max_tokens_ends_with_length(oai):
    r = oai.chat.completions.create(model="default", messages=ASK, max_tokens=4, temperature=0,
                                    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    assert r.choices[0].finish_reason == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)


def test_constrained_and_free_rows_share_a_batch_without_changing_each_other(oai):
    def free():
        return oai.chat.completions.create(model="default", messages=ASK, max_tokens=24, temperature=0, logit_bias=EOS_BAN).choices[0].message.content

    def constrained():
        r = oai.chat.completions.create(model="default", messages=ASK, max_tokens=400, temperature=0,
                                        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
        return r.choices[0].message.content

    alone = [free(), constrained()]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(f) for f in (free, constrained, free, constrained)]
        together = [f.result() for f in futures]
    assert together == alone * 2
    jsonschema.validate(json.loads(alone[1]), PERSON)
    assert not alone[0].startswith("{")


def test_json_schema_with_n_choices_constrains_every_choice(oai):
    r = oai.chat.completions.create(model="default", messages=ASK, max_tokens=400, temperature=1.0, n=3, seed=5,
                                    response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}})
    for c in r.choices:
        jsonschema.validate(json.loads(c.message.content), PERSON)


# -- tools ---------------------------------------------------------------------------------------------


def test_tool_choice_required_returns_schema_valid_calls(oai):
    r = oai.chat.completions.create(model="default", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, temperature=0)
    validate(r.model_dump(exclude_unset=True), "CreateChatCompletionResponse")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    _check_calls(choice.message.tool_calls)


def test_named_tool_choice_calls_that_function_once(oai):
    r = oai.chat.completions.create(model="default", messages=ASK, tools=TOOLS, max_tokens=300, temperature=0,
                                    tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = r.choices[0].message.tool_calls
    assert len(calls) == 1
    _check_calls(calls, {"get_time"})


def test_parallel_tool_calls_false_gives_at_most_one_call(oai):
    for seed in range(3):
        r = oai.chat.completions.create(model="default", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                        max_tokens=300, temperature=1.0, seed=seed)
        assert len(r.choices[0].message.tool_calls) == 1


def test_tool_choice_none_answers_in_text(oai):
    r = oai.chat.completions.create(model="default", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=12, temperature=0)
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason in ("stop", "length")


def test_tool_choice_auto_gives_calls_or_text_never_a_broken_call(oai):
    seen = set()
    for seed in range(6):
        r = oai.chat.completions.create(model="default", messages=ASK, tools=TOOLS, max_tokens=200, temperature=1.0, seed=seed)
        msg, finish = r.choices[0].message, r.choices[0].finish_reason
        if msg.tool_calls:
            seen.add("calls")
            assert finish == "tool_calls"
            _check_calls(msg.tool_calls)
        else:
            seen.add("text")
            assert finish in ("stop", "length")
            assert finish == "length" or not msg.content.lstrip().startswith(("{", "["))
    assert seen  # (which of the two a random model picks is its business)


def test_streamed_tool_calls_arrive_as_tool_call_deltas(tiny_server, oai):
    stream = oai.chat.completions.create(model="default", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300,
                                         temperature=0, stream=True, extra_body={"probes": {"alpha_probe": {"per_token": True}}})
    calls, finish, probe_chunks = {}, None, 0
    for chunk in stream:
        validate(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        c = chunk.choices[0]
        assert not c.delta.content  # calls never leak out as text
        if (c.model_extra or {}).get("probes"):
            probe_chunks += 1
        for d in c.delta.tool_calls or []:
            slot = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            slot["id"] = d.id or slot["id"]
            slot["name"] += d.function.name or ""
            slot["arguments"] += d.function.arguments or ""
        finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert calls and probe_chunks > 1  # per-token probe readings still streamed during the call
    for slot in calls.values():
        assert slot["id"].startswith("call_")
        jsonschema.validate(json.loads(slot["arguments"]), SCHEMAS[slot["name"]])


def test_history_with_tool_calls_and_tool_results_is_accepted(oai):
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    r = oai.chat.completions.create(model="default", messages=history, tools=TOOLS, tool_choice="none", max_tokens=8, temperature=0,
                                    extra_body={"steer": {"push": 8.0}, "probes": ["alpha_probe"]})
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.model_extra["steering"]["applied"][0]["vector"] == "push"
    assert "alpha_probe" in r.choices[0].model_extra["probes"]


def test_tool_turns_are_steered_and_scored(oai):
    r = oai.chat.completions.create(model="default", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, temperature=0,
                                    extra_body={"steer": {"push": 8.0}, "probes": {"alpha_probe": {"per_token": True}}})
    choice = r.choices[0]
    _check_calls(choice.message.tool_calls)
    probe = choice.model_extra["probes"]["alpha_probe"]
    assert len(probe["per_token"]) == r.usage.completion_tokens
    assert r.model_extra["steering"]["applied"][0]["vector"] == "push"


# -- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/defs/missing"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}}, "response_format.json_schema.name"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools"),
        ({"tools": [{"type": "retrieval"}]}, "tools"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "absent"}}}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"messages": ASK + [{"role": "tool", "tool_call_id": "call_nobody", "content": "x"}]}, "messages"),
        ({"messages": ASK + [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": ASK + [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]},
         "messages"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
def test_bad_tool_and_schema_input_is_a_400_naming_the_field(oai, fields, param):
    body = {"model": "default", "messages": ASK, "max_tokens": 4, **fields}
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(**body)
    assert info.value.body["param"].startswith(param), info.value.body  # the field, or a path inside it
    assert info.value.body["message"]


def test_chat_stream_with_json_schema_is_schema_valid(tiny_server):
    import httpx

    body = {"model": "default", "messages": ASK, "max_tokens": 400, "temperature": 0, "stream": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}}
    r = httpx.post(tiny_server.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120)
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
    jsonschema.validate(json.loads(text), PERSON)
