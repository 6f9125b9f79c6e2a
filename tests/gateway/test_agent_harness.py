"""A real agent framework (OpenAI Agents SDK) drives the server on the default model, through both its model classes.

Checks: the tool was called with arguments valid under the tool's own JSON
schema, the tool's result went back to the model, and clients.Monitor
recorded per-token probe readings for every model turn.
"""

import asyncio

import jsonschema
import pytest

from gateway_helpers import ServerProcess

pytest.importorskip("agents", reason="openai-agents is in the test extra")  # installed by '.[test]'

pytestmark = [pytest.mark.integration, pytest.mark.server]

PROBE = "concession"  # shipped with the default model, read at every token


@pytest.fixture(scope="module")
def real():
    server = ServerProcess("--model", "default")
    yield server
    server.stop()


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_agent_calls_its_tool_and_every_turn_is_monitored(real, api, tmp_path):
    from mlx_interp.clients.examples.agent_tools import AgentRun, run_agent, weather_tool
    from mlx_interp.clients.monitor import AlarmRule, Monitor, read_record

    record = tmp_path / "turns.jsonl"
    monitor = Monitor(None, rules=[AlarmRule(PROBE, 0.99, consecutive=2)], record=record)
    run = asyncio.run(run_agent(real.url + "/v1", monitor, api=api, questions=("What is the weather in Paris?",), max_tokens=32))

    # the tool was called, with arguments its schema accepts
    tool = weather_tool(AgentRun())
    assert run.calls
    for args in run.calls:
        jsonschema.validate(args, tool.params_json_schema)
    # its result went back to the model: the conversation holds the call and its output
    kinds = [item.get("type") or item.get("role") for item in run.items]
    assert "function_call" in kinds and "function_call_output" in kinds
    outputs = [item["output"] for item in run.items if item.get("type") == "function_call_output"]
    assert any("C" in str(o) for o in outputs)
    # every model turn (the call, then the answer) was recorded with per-token readings
    assert len(monitor.turns) >= 2
    for turn in monitor.turns:
        scores = turn.per_token[PROBE]
        assert scores and all(s is None or 0.0 <= s <= 1.0 for s in scores)
        assert PROBE in turn.aggregates
    assert len(read_record(record)) == len(monitor.turns)
    # the answer turn saw the tool result in its input
    assert any("sunny" in str(m) for m in monitor.turns[-1].messages)


ORDER = {
    "type": "object",
    "properties": {
        "customer": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24}, "vip": {"type": "boolean"}},
                     "required": ["name", "vip"], "additionalProperties": False},
        "items": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
            "type": "object", "properties": {"product": {"type": "string", "enum": ["apple", "bread", "milk"]},
                                             "quantity": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["product", "quantity"], "additionalProperties": False}},
        "delivery": {"type": "string", "enum": ["pickup", "courier"]},
    },
    "required": ["customer", "items", "delivery"],
    "additionalProperties": False,
}


def test_the_default_model_answers_a_nested_json_schema_validly(real):
    import json

    import openai

    client = openai.OpenAI(base_url=real.url + "/v1", api_key="unused", timeout=600, max_retries=0)
    r = client.chat.completions.create(
        model="default", max_tokens=120, temperature=0,
        messages=[{"role": "user", "content": "Ana (a VIP) orders two apples and one bread for pickup. Write the order."}],
        response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER, "strict": True}},
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), ORDER)
