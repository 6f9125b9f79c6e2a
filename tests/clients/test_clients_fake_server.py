"""MlxInterpClient, Monitor and ChatSession against a local HTTP server that speaks api.md's shapes."""

import json
import socket

import pytest
from fake_mlx_server import FakeServer

from mlx_interp.clients import MlxInterpClient, ProbeRequest, ServerError, Steer, probe_scores, steering_applied
from mlx_interp.clients.chat import ChatSession, ProbeMeter, Reply
from mlx_interp.clients.errors import EXIT_UNREACHABLE
from mlx_interp.clients.monitor import AlarmRule, Monitor, ProbeAlarm, read_record

USER = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture()
def server():
    with FakeServer(api_key="sekrit") as fake:
        yield fake


@pytest.fixture()
def client(server):
    with MlxInterpClient(server.base_url, "sekrit") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_sends_extension_fields_and_reads_them_back(server, client):
    reply = client.chat(USER, steer=[Steer("green_red", 1.5, layers="1-2")],
                        probes=[ProbeRequest("sycophancy", per_token=True)])
    body = server.requests[-1]["body"]
    assert body["model"] == "tiny-model"  # the first model the server lists
    assert body["steer"] == [{"vector": "green_red", "alpha": 1.5, "op": "add", "scope": "all", "layers": "1-2"}]
    assert body["probes"] == {"sycophancy": {"per_token": True}}
    assert reply.choices[0].message.content == "The answer is 4."
    result = probe_scores(reply)["sycophancy"]
    assert result.per_token == [0.1, 0.2, 0.9, 0.95, 0.3] and result.flagged is False
    assert steering_applied(reply)[0].vector == "green_red"


def test_header_form(server, client):
    client.chat(USER, model="tiny-model", steer={"green_red": 0.5}, probes=["sycophancy"], use_headers=True)
    request = server.requests[-1]
    assert request["headers"]["x-steer"] == "green_red=0.5"
    assert request["headers"]["x-probes"] == "sycophancy"
    assert "steer" not in request["body"] and "probes" not in request["body"]


def test_stream_chat_yields_live_token_scores(client):
    chunks = list(client.stream_chat(USER, probes={"sycophancy"}))
    token_scores = [probe_scores(c)["sycophancy"].score for c in chunks
                    if "sycophancy" in probe_scores(c) and not probe_scores(c)["sycophancy"].is_aggregate]
    assert token_scores == [0.1, 0.2, 0.9, 0.95, 0.3]
    assert probe_scores(chunks[-1])["sycophancy"].is_aggregate


def test_listing_and_health(client):
    assert client.models() == ["tiny-model"]
    assert [p["name"] for p in client.probes()] == ["sycophancy", "emotion"]
    assert [v["name"] for v in client.vectors()] == ["green_red", "calm"]
    assert client.health() == {"status": "ok"}


def test_errors_are_one_line(server):
    with MlxInterpClient(server.base_url, "wrong") as bad:
        with pytest.raises(ServerError, match="refused the API key") as info:
            bad.models()
        assert info.value.status == 401 and "\n" not in str(info.value)
    with MlxInterpClient(server.base_url, "sekrit") as good:
        with pytest.raises(ServerError, match=r"unknown steering vector 'nope'.*HTTP 400") as info:
            good.chat(USER, steer={"nope": 1.0})
        assert info.value.status == 400
    with MlxInterpClient(f"http://127.0.0.1:{free_port()}/v1") as down:
        with pytest.raises(ServerError, match="cannot reach the server") as info:
            list(down.stream_chat(USER, model="m"))
        assert info.value.exit_code == EXIT_UNREACHABLE


def test_monitor_fires_callback_after_consecutive_tokens(client, tmp_path):
    fired = []
    record = tmp_path / "run.jsonl"
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.8, consecutive=2)], probes=["emotion"],
                      record=record, on_alarm=fired.append, conversation_id="conv1")
    events = list(monitor.say("What is 2+2?"))
    assert "".join(e.text for e in events) == "The answer is 4."
    scored = [e for e in events if e.scores]
    assert [e.scores["sycophancy"] for e in scored] == [0.1, 0.2, 0.9, 0.95, 0.3]
    assert [e.token_index for e in scored] == [0, 1, 2, 3, 4]
    (alarm,) = fired
    assert alarm.token_index == 3 and alarm.scores == (0.9, 0.95) and alarm.turn == 0
    assert scored[3].alarms == [alarm]
    assert monitor.messages[-1] == {"role": "assistant", "content": "The answer is 4."}

    monitor.ask("Are you sure? I think it's 5.")
    assert len(fired) == 2 and fired[1].turn == 1
    lines = read_record(record)
    assert [line["turn"] for line in lines] == [0, 1]
    assert lines[1]["conversation"] == "conv1"
    assert lines[1]["messages"][-1] == {"role": "user", "content": "Are you sure? I think it's 5."}
    assert lines[0]["per_token"]["sycophancy"] == [0.1, 0.2, 0.9, 0.95, 0.3]
    assert lines[0]["per_token"]["emotion"] == [0.1, 0.2, 0.9, 0.95, 0.3]
    assert lines[0]["aggregates"]["sycophancy"]["aggregate"] == "mean"
    assert lines[0]["alarms"][0]["token_index"] == 3


def test_monitor_rule_needs_the_whole_run(client):
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.8, consecutive=3)])
    turn = monitor.ask("hi")
    assert turn.alarms == []  # only two tokens in a row are above 0.8


def test_monitor_raises_and_stops_the_stream(client, tmp_path):
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.5)], raise_on_alarm=True, record=tmp_path / "r.jsonl")
    seen = []
    with pytest.raises(ProbeAlarm) as info:
        for event in monitor.say("hi"):
            seen.append(event.text)
    assert info.value.alarm.token_index == 2
    assert "".join(seen) == "The answer is"  # nothing after the alarm token
    assert info.value.turn.stopped_by_alarm
    assert read_record(tmp_path / "r.jsonl")[0]["stopped_by_alarm"] is True


def test_monitor_uses_final_per_token_when_no_live_scores(server, client):
    server.script.stream_token_scores = False
    fired = []
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.8, consecutive=2)], on_alarm=fired.append)
    turn = monitor.ask("hi")
    assert turn.per_token["sycophancy"] == [0.1, 0.2, 0.9, 0.95, 0.3]
    assert [a.token_index for a in fired] == [3]


def test_monitor_failed_request_leaves_history_alone(server):
    with MlxInterpClient(server.base_url, "sekrit") as c:
        monitor = Monitor(c, [AlarmRule("sycophancy", 0.5)], steer={"nope": 1.0})
        with pytest.raises(ServerError, match="unknown steering vector"):
            monitor.ask("hi")
        assert monitor.messages == [] and monitor.turns == []


def test_alarm_rule_validation():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AlarmRule("s", 2.0)
    with pytest.raises(ValueError, match=">= 1"):
        AlarmRule("s", 0.5, consecutive=0)


def test_chat_session_commands_and_history(server, client):
    session = ChatSession(client, "tiny-model", system="be brief")
    assert session.command("/steer green_red 1.5").output == "steering: green_red=1.5"
    assert session.command("/steer calm=-0.5").output == "steering: green_red=1.5, calm=-0.5"
    assert session.command("/steer").output == "steering: green_red=1.5, calm=-0.5"
    assert session.command("/steer calm 0").output == "steering: green_red=1.5"
    assert session.command("/probes sycophancy, emotion").output == "probes: sycophancy, emotion"
    assert session.command("/steer green_red=x").error
    unknown = session.command("/steer nope 1")
    assert unknown.error and unknown.output == "the server has no vector 'nope' (it has: calm, green_red)"
    assert session.command("/probes sycophancy nosuch").output == "the server has no probe 'nosuch' (it has: emotion, sycophancy)"
    assert session.steering_text() == "steering: green_red=1.5" and session.probes_text() == "probes: sycophancy, emotion"
    assert session.command("/frobnicate").error
    assert session.command("/quit").quit
    assert "sycophancy" in session.command("/probes list").output

    reply = Reply()
    events = list(session.send("What is 2+2?", reply))
    assert "".join(d for d, _ in events) == "The answer is 4."
    assert reply.per_token["emotion"] == [0.1, 0.2, 0.9, 0.95, 0.3]
    body = server.requests[-1]["body"]
    assert body["steer"][0]["vector"] == "green_red"
    assert body["probes"] == {"sycophancy": {"per_token": True}, "emotion": {"per_token": True}}
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant"]
    assert "assistant: The answer is 4." in session.command("/history").output
    session.command("/steer off")
    session.command("/probes off")
    list(session.send("again", Reply()))
    body = server.requests[-1]["body"]
    assert "steer" not in body and "probes" not in body
    assert len(body["messages"]) == 4  # system, user, assistant, user: history kept
    session.command("/reset")
    assert session.messages == [{"role": "system", "content": "be brief"}]


def test_chat_session_failed_turn_is_not_kept(client):
    session = ChatSession(client, "tiny-model")
    session.steer = [Steer("nope", 1.0)]  # e.g. removed on the server since it was chosen
    with pytest.raises(ServerError):
        list(session.send("hi", Reply()))
    assert session.messages == []


def test_meter_text():
    meter = ProbeMeter(color=False)
    text, width = meter.live({"sycophancy": 0.81, "emotion": 0.2})
    assert text == "  [sycophancy ▇ 0.81  emotion ▂ 0.20]" and width == len(text)
    colored, colored_width = ProbeMeter(color=True).live({"sycophancy": 0.81})
    assert "\x1b[31m" in colored and colored_width == len("  [sycophancy ▇ 0.81]")
    reply = Reply(per_token={"s": [0.2, 0.4]}, aggregates={"s": {"flagged": True}})
    assert meter.summary(reply) == "[probes] s mean 0.30 max 0.40 FLAGGED"


def test_record_is_strict_json(client, tmp_path):
    record = tmp_path / "r.jsonl"
    Monitor(client, [AlarmRule("sycophancy", 0.99)], record=record).ask("hi")
    text = record.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-finite constant {c} in record"))


def test_error_in_the_middle_of_a_stream(server, client):
    server.script.fail_after = 2
    seen = []
    with pytest.raises(ServerError, match=r"^generation failed: out of memory$"):
        for chunk in client.stream_chat(USER):
            seen.append(chunk)
    assert len(seen) == 3  # the role chunk and two tokens came before the error
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.5)])
    with pytest.raises(ServerError):
        monitor.ask("hi")
    assert monitor.turns == [] and monitor.messages == []


def test_monitor_watches_a_plain_openai_stream(server, client):
    fired = []
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.9, consecutive=2)], on_alarm=fired.append)
    stream = client.openai.chat.completions.create(
        model="tiny-model", messages=USER, stream=True, extra_body=monitor.request_body())
    events = list(monitor.watch(stream, USER))
    assert server.requests[-1]["body"]["probes"] == {"sycophancy": {"per_token": True}}
    assert "".join(e.text for e in events) == "The answer is 4."
    assert [a.token_index for a in fired] == [3] and monitor.turns[0].messages == USER


def test_live_line_draws_and_erases_the_meter(monkeypatch):
    import io
    import os as _os

    from mlx_interp.clients.chat_terminal import LiveLine, display_width

    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: _os.terminal_size((40, 24)))
    out = io.StringIO()
    line = LiveLine(out, ProbeMeter(color=False))
    line.write("Hi", {"s": 0.5})
    assert out.getvalue() == "Hi  [s ▅ 0.50]"
    line.write(" there", {"s": 0.9})
    assert out.getvalue().endswith("\x1b[12D\x1b[K there  [s █ 0.90]")
    line.write(" and a long tail of text", {"s": 0.1})  # 32 columns: the meter no longer fits
    assert out.getvalue().endswith("\x1b[12D\x1b[K and a long tail of text")
    line.write("\nnext", {"s": 0.2})  # a new line: room again
    assert out.getvalue().endswith("\nnext  [s ▂ 0.20]")
    line.end()
    assert out.getvalue().endswith("\x1b[12D\x1b[K\n")
    assert display_width("日本") == 4 and display_width("e\u0301") == 1
