"""Tool parsing, rendering and reading, and the Responses input translation, without a model."""

import json

import pytest

from mlx_interp.gateway import responses_api, tools
from mlx_interp.gateway.errors import BadRequest

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": WEATHER}}]


def _toolset(choice=None, parallel=None):
    parsed = tools.parse_tools(CHAT_TOOLS, flat=False, max_tools=4, max_schema_chars=10_000)
    return tools.parse_choice(choice, parsed, parallel, flat=False)


def test_a_finished_call_becomes_tool_calls_with_json_string_arguments():
    out = tools.ToolOutput(_toolset("required"))
    content, calls = out.split('{"name":"get_weather","arguments":{"city":"Paris"}}')
    assert content is None and len(calls) == 1
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert calls[0]["id"].startswith("call_")
    _, many = out.split('[{"name":"get_weather","arguments":{"city":"A"}},{"name":"get_weather","arguments":{"city":"B"}}]')
    assert [json.loads(c["function"]["arguments"])["city"] for c in many] == ["A", "B"]


@pytest.mark.parametrize("text", ['{"name":"get_weather","arguments":{"city":"Pa', '{"answer": 1}', "plain words", '{"name":"other","arguments":{}}'])
def test_text_that_is_not_a_whole_call_stays_text(text):
    content, calls = tools.ToolOutput(_toolset("auto")).split(text)
    assert calls == [] and content == text


def test_finish_reports_tool_calls_only_for_a_completed_answer():
    out = tools.ToolOutput(_toolset("required"))
    text = '{"name":"get_weather","arguments":{"city":"Paris"}}'
    assert tools.finish(out, text, "stop")[2] == "tool_calls"
    cut = text[:20]
    assert tools.finish(out, cut, "length") == (cut, [], "length")


def test_rendering_puts_the_tools_in_the_system_message_and_calls_as_json():
    ts = _toolset()
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Rome"}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    out, template_tools = tools.render(history, ts)
    assert template_tools is None
    assert out[0]["content"].startswith("Be brief.") and '"name":"get_weather"' in out[0]["content"]
    assert "JSON array" in out[0]["content"]  # parallel calls are on by default
    assert out[2] == {"role": "assistant", "content": '{"name":"get_weather","arguments":{"city":"Rome"}}'}
    assert out[3] == {"role": "tool", "content": "sunny"}
    assert tools.render(history, _toolset("none"))[0][0] == {"role": "system", "content": "Be brief."}


def test_the_grammar_forbids_arrays_when_parallel_calls_are_off():
    assert "array" in json.dumps(tools.calls_schema(_toolset("required")))
    assert "array" not in json.dumps(tools.calls_schema(_toolset("required", parallel=False)))
    named = tools.parse_choice({"type": "function", "function": {"name": "get_weather"}}, _toolset().tools, None, flat=False)
    assert tools.calls_schema(named)["properties"]["name"] == {"const": "get_weather"}


def test_responses_items_become_chat_messages():
    body = {
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in "}, {"type": "input_text", "text": "Rome?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Rome"}'},
            {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        ],
    }
    msgs = responses_api.input_messages(body)
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1] == {"role": "user", "content": "Weather in Rome?"}
    assert [c["id"] for c in msgs[2]["tool_calls"]] == ["c1", "c2"]  # consecutive calls: one assistant turn
    assert msgs[3] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def test_responses_fields_that_need_storage_are_refused():
    for field, value in (("store", True), ("previous_response_id", "resp_1"), ("conversation", "c")):
        with pytest.raises(BadRequest) as info:
            responses_api.chat_body({"input": "hi", field: value}, 1000)
        assert info.value.param == field
    chat, _ = responses_api.chat_body({"input": "hi", "store": False, "max_output_tokens": 5}, 1000)
    assert chat["max_tokens"] == 5 and chat["messages"] == [{"role": "user", "content": "hi"}]
