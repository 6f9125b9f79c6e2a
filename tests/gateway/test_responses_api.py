"""POST /v1/responses through a real server (tiny random model) and the official openai client, validated against OpenAI's schema."""

import json

import httpx
import jsonschema
import openai
import pytest

from conftest import API_KEY
from gateway_helpers import validate

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EOS_BAN = {"258": -100}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER, "strict": True}]
ITEM = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 10}, "done": {"type": "boolean"},
                                         "steps": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3}},
        "required": ["title", "done", "steps"], "additionalProperties": False}


EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
}


@pytest.fixture()
def oai(tiny_server):
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=API_KEY, timeout=120, max_retries=0)


def _post(server, body):
    return httpx.post(server.url + "/v1/responses", json=body, headers=AUTH, timeout=120)


def test_create_with_a_string_input_is_a_schema_valid_response(tiny_server):
    r = _post(tiny_server, {"model": "default", "input": "Hello there", "instructions": "Be brief.", "max_output_tokens": 6,
                            "temperature": 0, "extra": None} | {"steer": {"push": 8.0}, "probes": ["alpha_probe"]})
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "Response")
    assert body["object"] == "response" and body["status"] in ("completed", "incomplete")
    assert body["output"][0]["type"] == "message"
    assert body["usage"]["output_tokens"] >= 1
    assert body["steering"]["applied"][0]["vector"] == "push"
    assert set(body["probes"]["alpha_probe"]) >= {"score", "per_layer"}


def test_max_output_tokens_makes_an_incomplete_response(oai):
    r = oai.responses.create(model="default", input="Count forever", max_output_tokens=5, temperature=0, extra_body={"logit_bias": EOS_BAN})
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 5
    assert r.output_text


def test_function_call_and_its_output_round_trip(oai):
    first = oai.responses.create(model="default", input="Weather in Paris?", tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                 max_output_tokens=200, temperature=0)
    validate(first.model_dump(exclude_unset=True), "Response")
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and first.status == "completed"
    for c in calls:
        assert c.name == "get_weather" and c.call_id.startswith("call_")
        jsonschema.validate(json.loads(c.arguments), WEATHER)
    items = [{"role": "user", "content": "Weather in Paris?"}]
    items += [{"type": "function_call", "call_id": c.call_id, "name": c.name, "arguments": c.arguments} for c in calls]
    items += [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls]
    second = oai.responses.create(model="default", input=items, tools=TOOLS, tool_choice="none", max_output_tokens=5, temperature=0)
    assert second.output[0].type == "message"


def test_named_tool_choice_in_the_responses_shape(oai):
    r = oai.responses.create(model="default", input="Weather?", tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"},
                             max_output_tokens=200, temperature=0)
    assert [o.type for o in r.output] == ["function_call"]


def test_text_format_json_schema(oai):
    r = oai.responses.create(model="default", input="A task as JSON", max_output_tokens=300, temperature=0,
                             text={"format": {"type": "json_schema", "name": "task", "schema": ITEM, "strict": True}})
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), ITEM)
    assert r.text.format.type == "json_schema"


def test_stream_emits_the_responses_events_in_order(tiny_server):
    body = {"model": "default", "input": "Hi", "max_output_tokens": 4, "temperature": 0, "stream": True,
            "probes": {"alpha_probe": {"per_token": True}}}
    with httpx.stream("POST", tiny_server.url + "/v1/responses", json=body, headers=AUTH, timeout=120) as r:
        assert r.status_code == 200
        events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", kinds[-1]]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for e in events:
        validate(e, EVENT_SCHEMAS[e["type"]])
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(d["delta"] for d in deltas) == events[-1]["response"]["output"][0]["content"][0]["text"]
    assert all("alpha_probe" in d["probes"] for d in deltas)


def test_streamed_function_call_with_the_openai_client(oai):
    stream = oai.responses.create(model="default", input="Weather in Rome?", tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                  max_output_tokens=200, temperature=0, stream=True)
    kinds, final = [], None
    for event in stream:
        kinds.append(event.type)
        validate(event.model_dump(exclude_unset=True), EVENT_SCHEMAS[event.type])
        if event.type == "response.completed":
            final = event.response
    assert "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call"
    jsonschema.validate(json.loads(call.arguments), WEATHER)


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": []}, "input"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input"),
        ({"input": [{"type": "function_call_output", "call_id": "nobody", "output": "x"}]}, "input"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "objekt"}}}}, "text.format.schema"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "absent"}}, "tool_choice"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_bad_responses_input_is_a_400_naming_the_field(tiny_server, fields, param):
    r = _post(tiny_server, {"model": "default", "input": "Hi", "max_output_tokens": 4, **fields})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.json()


def test_a_guard_that_stops_ends_the_response_as_content_filtered(tiny_server):
    guard = [{"probe": "alpha_probe", "above": 0.0, "then": "stop"}]  # any score: fires on the first token
    r = _post(tiny_server, {"model": "default", "input": "Hi", "max_output_tokens": 8, "temperature": 0, "guard": guard})
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "Response")
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "content_filter"}
    assert body["guard"]["fired"] and body["guard"]["fired"][0]["action"] == "stop"
