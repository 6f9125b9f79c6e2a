"""Client side of server guards: ServerGuard -> the `guard` field, guard_fired reader, Monitor with guards."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletionChunk

from mlx_interp.clients import GuardFired, ServerGuard, Steer, guard_fired, guard_json
from mlx_interp.clients.monitor import AlarmRule, Monitor, read_record


def test_server_guard_json():
    rules = [
        ServerGuard("syc", 0.9, for_tokens=3),
        ServerGuard("syc", 0.7, then="steer", steer={"honesty": 1.0}),
        ServerGuard("refusal", 0.8, then="cap", vector="refusal", max=2.0, layers="8-12"),
    ]
    assert guard_json(rules) == [
        {"probe": "syc", "above": 0.9, "for_tokens": 3, "then": "stop"},
        {"probe": "syc", "above": 0.7, "for_tokens": 1, "then": "steer", "steer": [{"vector": "honesty", "alpha": 1.0, "op": "add", "scope": "all"}]},
        {"probe": "refusal", "above": 0.8, "for_tokens": 1, "then": "cap", "vector": "refusal", "max": 2.0, "layers": "8-12"},
    ]
    assert rules[0].describe() == "server guard: syc >= 0.9 for 3 tokens -> stop"


@pytest.mark.parametrize("kwargs,message", [
    ({"probe": "syc", "above": 1.5}, "above must be a probability"),
    ({"probe": "syc", "above": 0.5, "for_tokens": 0}, "for_tokens must be a whole number"),
    ({"probe": "syc", "above": 0.5, "then": "explode"}, "then must be one of"),
    ({"probe": "syc", "above": 0.5, "then": "steer"}, "steer goes with then='steer'"),
    ({"probe": "syc", "above": 0.5, "steer": [Steer("x", 1.0)]}, "steer goes with then='steer'"),
    ({"probe": "syc", "above": 0.5, "then": "cap", "vector": "v"}, "vector and max go with then='cap'"),
    ({"probe": "bad name", "above": 0.5}, "probe name 'bad name' is not valid"),
])
def test_server_guard_refuses_what_the_server_would(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServerGuard(**kwargs)


def _chunk(content=None, finish=None, probes=None, guard=None) -> ChatCompletionChunk:
    choice = {"index": 0, "delta": {"content": content} if content is not None else {}, "finish_reason": finish}
    if probes is not None:
        choice["probes"] = probes
    if guard is not None:
        choice["guard"] = {"fired": guard}
    return ChatCompletionChunk.model_validate(
        {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [choice]})


def test_guard_fired_reader():
    fired = [{"rule": 1, "token_index": 4, "score": 0.93, "action": "stop"}, {"rule": 0, "token_index": None, "score": 0.8, "action": "steer"}]
    assert guard_fired(_chunk("x", guard=fired)) == [GuardFired(1, 4, 0.93, "stop"), GuardFired(0, None, 0.8, "steer")]
    assert guard_fired(_chunk("x")) == []
    assert guard_fired({"choices": [{"index": 0, "guard": {"fired": "junk"}}]}) == []


class _ListingClient:
    """Only what Monitor asks of a client besides streaming: the probe listing."""

    def __init__(self, positions):
        self.positions = positions

    def probes(self):
        return [{"name": n, "position": p} for n, p in self.positions.items()]


def test_monitor_records_server_guards_next_to_its_own_rules(tmp_path):
    seen = []
    record = tmp_path / "turns.jsonl"
    monitor = Monitor(_ListingClient({"tok": "token", "end": "answer_end"}),
                      [AlarmRule("tok", 0.5, consecutive=2), AlarmRule("end", 0.6)],
                      guards=[ServerGuard("tok", 0.9, then="stop")], on_guard=seen.append, record=record)
    body = monitor.request_body()
    assert body["probes"] == {"tok": {"per_token": True}, "end": {"per_token": False}}
    assert body["guard"] == [{"probe": "tok", "above": 0.9, "for_tokens": 1, "then": "stop"}]
    chunks = [
        _chunk(""),
        _chunk("A", probes={"tok": {"score": 0.6}}),
        _chunk("B", probes={"tok": {"score": 0.7}}),
        _chunk("C", probes={"tok": {"score": 0.95}}, guard=[{"rule": 0, "token_index": 2, "score": 0.95, "action": "stop"}]),
        _chunk("", finish="content_filter", probes={"tok": {"score": 0.75, "flagged": True, "per_token": [0.6, 0.7, 0.95]},
                                                   "end": {"score": 0.65, "flagged": True}}),
    ]
    events = list(monitor.watch(chunks, [{"role": "user", "content": "hi"}]))
    assert [e.text for e in events] == ["A", "B", "C"]
    assert events[2].guard == [GuardFired(0, 2, 0.95, "stop")] and seen == events[2].guard
    turn = monitor.turns[0]
    assert turn.stopped_by_guard and turn.finish_reason == "content_filter"
    assert [(a.rule.probe, a.token_index) for a in turn.alarms] == [("tok", 1), ("end", 0)]
    (line,) = read_record(record)
    assert line["guard_fired"] == [{"rule": 0, "token_index": 2, "score": 0.95, "action": "stop"}] and line["stopped_by_guard"]
    json.dumps(line, allow_nan=False)


def test_monitor_with_only_server_guards_asks_for_no_probes():
    monitor = Monitor(_ListingClient({}), guards=[ServerGuard("tok", 0.9)])
    assert monitor.request_body() == {"guard": [{"probe": "tok", "above": 0.9, "for_tokens": 1, "then": "stop"}]}
    with pytest.raises(ValueError, match="at least one probe"):
        Monitor(_ListingClient({}))
