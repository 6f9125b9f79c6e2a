"""The client helpers, the monitor, server guards, the pushback example and `mlx-interp chat` against a real server.

One `mlx-interp serve --model default` process for the module with the shipped
libraries only: the `green_red` vector and the shipped probes, nothing rigged.
Where a test needs to know when a rule fires, it reads the probe's scores off
an unguarded greedy run of the same request first and sets the threshold from
them (`_fire_point`), so the assertion holds for whatever the shipped probe
scores, and fails if the monitor, the guard or the server get the timing wrong.
The pushback test is the one claim about the probe itself: its guard fires on
pushback replies and stays quiet on the control replies.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from chat_driver import PROMPT, PtyChat, run_chat_piped

from mlx_interp.clients import MlxInterpClient, ServerError, ServerGuard, Steer, guard_fired, probe_scores, steering_applied
from mlx_interp.clients.monitor import AlarmRule, Monitor, ProbeAlarm, read_record

pytestmark = [pytest.mark.server, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
LAYERS = 30  # SmolLM2-135M-Instruct
API_KEY = "e2e-key"
STARTUP_TIMEOUT_S = 180
MAX_TOKENS = 8
USER = [{"role": "user", "content": "What colour is grass?"}]
VECTOR = "green_red"
STRONG_ALPHA = 40.0  # far past coherent: the text must change
PUSHBACK_QUESTIONS = 2  # Australia (the model holds) and the spider (it concedes), at the example's default length


def _shipped_probes() -> dict[str, dict]:
    from mlx_interp.probes.positions import declared_position

    out = {}
    for path in sorted((ROOT / "probes" / "library").glob("*.json")):
        meta = json.loads(path.read_text())
        out[meta["name"]] = {**meta, "position": declared_position(meta)}
    return out


SHIPPED = _shipped_probes()
TOKEN_PROBES = [n for n, m in SHIPPED.items() if m["position"] == "token"]
# the monitoring probe: one read per token (the examples' default, if the server ships it)
from mlx_interp.clients.examples.pushback import PREFERRED_PROBES  # noqa: E402

PROBE = next((n for n in PREFERRED_PROBES if n in TOKEN_PROBES), TOKEN_PROBES[0] if TOKEN_PROBES else None)
OTHER = next((n for n in SHIPPED if n != PROBE), None)  # a second shipped probe, any position


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    assert PROBE is not None, f"no shipped probe is read per token: {SHIPPED.keys()}"
    root = tmp_path_factory.mktemp("clients-e2e")
    port = free_port()
    log_path = root / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "MLX_INTERP_API_KEY"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_interp.cli", "serve", "--model", "default", "--port", str(port), "--api-key", API_KEY],
            cwd=str(ROOT), stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /health in {STARTUP_TIMEOUT_S}s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield {"base_url": f"{url}/v1", "root": root}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture()
def client(server):
    with MlxInterpClient(server["base_url"], API_KEY) as c:
        yield c


def _live_scores(client, messages=USER, max_tokens=MAX_TOKENS) -> list[float]:
    chunks = client.stream_chat(messages, probes=[PROBE], max_tokens=max_tokens, temperature=0, extra_body={"probes": {PROBE: {"per_token": True}}})
    return [r.score for c in chunks for r in [probe_scores(c).get(PROBE)] if r is not None and not r.is_aggregate]


def _fire_point(scores, lo=0):
    """(t, threshold): the first token >= lo whose score is above every earlier one; a threshold just under it."""
    for t in range(lo, len(scores)):
        if t == 0 or scores[t] - max(scores[:t]) > 1e-4:
            return t, scores[t] - 1e-5
    pytest.fail(f"no token rises above the ones before it: {scores}")


def test_helpers_round_trip(client):
    assert "default" in client.models()
    listed = {p["name"]: p for p in client.probes()}
    assert set(SHIPPED) <= set(listed) and listed[PROBE]["position"] == "token"
    vector = {v["name"]: v for v in client.vectors()}[VECTOR]
    names = [PROBE] + ([OTHER] if OTHER else [])
    reply = client.chat(USER, steer=[Steer(VECTOR, 0.1, layers="8-10")], probes=names, max_tokens=MAX_TOKENS, temperature=0)
    (applied,) = steering_applied(reply)
    assert applied.vector == VECTOR and applied.alpha == 0.1 and applied.op == "add"
    assert applied.layers == [8, 9, 10] and applied.sha256 == vector["sha256"]
    scores = probe_scores(reply)
    assert set(scores) == set(names)
    for name in names:
        result = scores[name]
        assert 0.0 <= result.score <= 1.0 and result.layer == SHIPPED[name]["best_layer"]
        assert result.flagged == (result.score >= result.threshold)
        assert len(result.per_layer) == LAYERS and result.prompt_score is not None


def test_header_form_steers_too(client):
    plain = client.chat(USER, model="default", max_tokens=MAX_TOKENS, temperature=0)
    steered = client.chat(USER, model="default", steer={VECTOR: STRONG_ALPHA}, probes=[PROBE], use_headers=True,
                          max_tokens=MAX_TOKENS, temperature=0)
    assert steering_applied(plain) == []
    assert steering_applied(steered)[0].alpha == STRONG_ALPHA
    assert PROBE in probe_scores(steered)
    assert steered.choices[0].message.content != plain.choices[0].message.content


def test_stream_carries_per_token_scores(client):
    chunks = list(client.stream_chat(USER, max_tokens=MAX_TOKENS, temperature=0, extra_body={"probes": {PROBE: {"per_token": True}}}))
    live = [probe_scores(c)[PROBE] for c in chunks if PROBE in probe_scores(c)]
    tokens = [r.score for r in live if not r.is_aggregate]
    (final,) = [r for r in live if r.is_aggregate]
    assert 1 <= len(tokens) <= MAX_TOKENS and all(0.0 <= s <= 1.0 for s in tokens)
    assert final.per_token == pytest.approx(tokens, abs=1e-6)  # the final chunk repeats what streamed, token by token


def test_monitor_sees_live_scores_and_fires(client, tmp_path):
    scores = _live_scores(client, [{"role": "user", "content": "What is the capital of France?"}])
    t, threshold = _fire_point(scores, lo=1)
    fired = []
    record = tmp_path / "conversation.jsonl"
    monitor = Monitor(client, [AlarmRule(PROBE, threshold), AlarmRule(PROBE, min(1.0, max(scores) + 1e-3))],
                      record=record, on_alarm=fired.append, max_tokens=MAX_TOKENS, temperature=0)
    events = list(monitor.say("What is the capital of France?"))
    scored = [e for e in events if e.scores]
    assert [e.scores[PROBE] for e in scored] == pytest.approx(scores, abs=1e-6)
    assert [(a.rule.threshold, a.token_index) for a in fired][:1] == [(threshold, t)]
    assert all(a.rule.threshold == threshold for a in fired)  # the rule above every score never fires
    assert monitor.turns[0].text == "".join(e.text for e in events) and monitor.turns[0].text
    monitor.ask("Are you sure? I think it's Lyon.")
    (first, second) = read_record(record)
    assert second["turn"] == 1 and second["messages"][-1]["content"] == "Are you sure? I think it's Lyon."
    assert len(second["messages"]) == 3  # the first exchange is part of the second turn's prompt
    assert first["per_token"][PROBE] == pytest.approx(scores, abs=1e-6)
    assert first["alarms"][0]["token_index"] == t


def test_monitor_can_stop_the_agent(client):
    monitor = Monitor(client, [AlarmRule(PROBE, 0.0)], raise_on_alarm=True, max_tokens=MAX_TOKENS)
    with pytest.raises(ProbeAlarm) as info:
        monitor.ask("Tell me a story.")
    assert info.value.alarm.token_index == 0 and info.value.turn.stopped_by_alarm


def test_monitor_relies_on_a_server_guard(client):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    scores = _live_scores(client, question)
    t, above = _fire_point(scores, lo=1)
    seen = []
    monitor = Monitor(client, guards=[ServerGuard(PROBE, above, then="stop")], probes=[PROBE], on_guard=seen.append,
                      max_tokens=MAX_TOKENS, temperature=0)
    turn = monitor.ask(question[0]["content"])
    assert turn.stopped_by_guard and turn.finish_reason == "content_filter"
    assert [(f.rule, f.token_index, f.action) for f in turn.guard_fired] == [(0, t, "stop")] and seen == turn.guard_fired
    assert turn.per_token[PROBE] == pytest.approx(scores[: t + 1], abs=1e-6)  # nothing after the token that fired
    # the same rule through the plain openai client, whole response
    reply = client.chat(question, max_tokens=MAX_TOKENS, temperature=0, extra_body={"guard": [ServerGuard(PROBE, above).to_json()]})
    assert reply.choices[0].finish_reason == "content_filter" and [f.token_index for f in guard_fired(reply)] == [t]


def test_pushback_example(server, tmp_path):
    record = tmp_path / "pushback.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "mlx_interp.clients.examples.pushback", "--base-url", server["base_url"], "--api-key", API_KEY,
         "--probe", PROBE, "--questions", str(PUSHBACK_QUESTIONS), "--record", str(record), "--quiet"],
        capture_output=True, text=True, cwd=str(ROOT), timeout=900,
    )
    assert done.returncode == 0, done.stderr
    pushback = re.search(r"fired in (\d+) of (\d+) pushback replies", done.stdout)
    control = re.search(r"fired in (\d+) of (\d+) control replies", done.stdout)
    assert pushback and control, done.stdout
    turns = read_record(record)
    assert len(turns) == 4 * int(pushback.group(2))  # two conversations of two turns per question
    # the claim of the example: the guard fires on a real signal and stays quiet on the control
    assert int(pushback.group(1)) >= 1 and int(control.group(1)) == 0, done.stdout


def test_errors_against_the_real_server(server):
    with MlxInterpClient(server["base_url"], "wrong-key") as bad:
        with pytest.raises(ServerError, match=r"refused the API key \(401\)"):
            bad.models()
    with MlxInterpClient(server["base_url"], API_KEY) as good:
        with pytest.raises(ServerError, match=r"HTTP 400") as info:
            good.chat(USER, model="default", steer={"no_such_vector": 1.0}, max_tokens=2)
        assert "no_such_vector" in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(ServerError, match=r"HTTP 400") as info:
            good.chat(USER, model="default", max_tokens=2, extra_body={"guard": [{"probe": "no_such_probe", "above": 0.5, "then": "stop"}]})
        assert "no_such_probe" in str(info.value)


def test_chat_through_a_pipe(server):
    script = f"/steer {VECTOR} 0.1\n/probes {PROBE}\nWhat colour is grass?\n/steer off\nAnd the sky?\n/history\n"
    done = run_chat_piped(["--base-url", server["base_url"], "--api-key", API_KEY, "--max-tokens", str(MAX_TOKENS),
                           "--temperature", "0"], script)
    assert done.returncode == 0, done.stderr
    assert f"steering: {VECTOR}=0.1" in done.stdout and "steering: off" in done.stdout
    assert done.stdout.count(f"[probes] {PROBE} mean") == 2
    assert "user: What colour is grass?" in done.stdout and "user: And the sky?" in done.stdout
    assert "\x1b[" not in done.stdout


def test_chat_in_a_terminal(server):
    chat = PtyChat(["--base-url", server["base_url"], "--max-tokens", str(MAX_TOKENS), "--temperature", "0"],
                   MLX_INTERP_API_KEY=API_KEY)
    names = [PROBE] + ([OTHER] if OTHER else [])
    try:
        assert b"default" in chat.read_until(PROMPT, timeout=60)
        assert f"steering: {VECTOR}=0.1".encode() in chat.exchange(f"/steer {VECTOR} 0.1")
        assert f"probes: {', '.join(names)}".encode() in chat.exchange(f"/probes {' '.join(names)}")
        out = chat.exchange("Hello!", timeout=120)
        # the live meter: the token probe's name, a bar and its score, coloured by the score
        assert re.search(rb"\[\x1b\[3[123]m" + PROBE[:12].encode() + rb" \S+ [01]\.\d\d\x1b\[0m", out), out
        assert re.search(rb"\[probes\] " + PROBE.encode() + rb" mean [01]\.\d\d max [01]\.\d\d", out), out
        assert b"probes: off" in chat.exchange("/probes off")
        out = chat.exchange("/steer nope 1")
        assert b"error: the server has no vector 'nope' (it has: " in out
        assert f"steering: {VECTOR}=5000".encode() in chat.exchange(f"/steer {VECTOR} 5000")
        out = chat.exchange("Hi again", timeout=120)
        assert b"error: " in out and b"alpha" in out and b"(HTTP 400)" in out and b"Traceback" not in out
        out = chat.exchange("/history")
        assert b"user: Hello!" in out and b"Hi again" not in out  # a refused message is not kept
        assert chat.close() == 0
    finally:
        if chat.proc.poll() is None:
            chat.proc.kill()


def test_chat_wrong_key_and_no_server(server):
    done = run_chat_piped(["--base-url", server["base_url"], "--api-key", "wrong"], "hi\n")
    assert done.returncode == 1 and done.stderr.startswith("error: the server at") and "(401)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_chat_piped(["--base-url", f"http://127.0.0.1:{free_port()}/v1"], "hi\n")
    assert done.returncode == 3 and done.stderr.startswith("error: cannot reach the server")
