"""The client helpers, the monitor, the pushback example and `mlx-interp chat` against a real server.

One `mlx-interp serve --model default` process for the module, with a steering
vector and two probes written for the default model (576 hidden, 30 layers)
into a temporary library: "sycophancy" has a large positive bias, so every
token scores near 1 and a rule on it fires; "calm" has a large negative bias,
so a rule on it never fires. That makes the alarms certain while the scores
still come from the model's real hidden states.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from chat_driver import PROMPT, PtyChat, run_chat_piped

from mlx_interp.clients import MlxInterpClient, ServerError, Steer, probe_scores, steering_applied
from mlx_interp.clients.monitor import AlarmRule, Monitor, ProbeAlarm, read_record

pytestmark = [pytest.mark.server, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
HIDDEN, LAYERS = 576, 30  # SmolLM2-135M-Instruct
API_KEY = "e2e-key"
STARTUP_TIMEOUT_S = 180
MAX_TOKENS = 6
USER = [{"role": "user", "content": "What colour is grass?"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_artifacts(root: Path) -> tuple[Path, Path]:
    """A random green_red vector and two probes with known leanings, for the default model."""
    from mlx_interp.probes.probe import Probe
    from mlx_interp.steering.vectors import SteeringVector, build_metadata

    rng = np.random.default_rng(0)
    vectors, probes = root / "vectors", root / "probes"
    directions = rng.standard_normal((LAYERS, HIDDEN)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    meta = build_metadata("green_red", hidden_size=HIDDEN, num_layers=LAYERS, method="random",
                          recommended_layers=[8, 9, 10], default_alpha=4.0, description="test direction")
    SteeringVector(name="green_red", directions=directions, metadata=meta).save(vectors)
    layers = (6, 12, 18)
    for name, bias in (("sycophancy", 6.0), ("calm", -9.0)):
        Probe(
            name=name,
            layers=layers,
            weights=(rng.standard_normal((len(layers), HIDDEN)) * 1e-4).astype(np.float32),
            bias=np.full(len(layers), bias, np.float32),
            mean=np.zeros((len(layers), HIDDEN), np.float32),
            scale=np.ones((len(layers), HIDDEN), np.float32),
            metadata={"format_version": 1, "name": name, "labels": ["no", "yes"], "method": "logistic",
                      "best_layer": 12, "threshold": 0.8, "aggregation": "mean", "hidden_size": HIDDEN,
                      "num_layers": LAYERS},
        ).save(probes)
    return vectors, probes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("clients-e2e")
    vectors, probes = write_artifacts(root)
    port = free_port()
    log_path = root / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "MLX_INTERP_API_KEY"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_interp.cli", "serve", "--model", "default", "--port", str(port),
             "--vectors", str(vectors), "--probes", str(probes), "--api-key", API_KEY],
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


def test_helpers_round_trip(client):
    assert "default" in client.models()
    # ours come first; the package's shipped libraries may add more names
    probes = {p["name"]: p for p in client.probes()}
    assert {"sycophancy", "calm"} <= set(probes) and probes["sycophancy"]["library"].endswith("probes")
    assert "green_red" in {v["name"] for v in client.vectors()}
    reply = client.chat(USER, steer=[Steer("green_red", 2.0, layers="8-10")], probes=["sycophancy", "calm"],
                        max_tokens=MAX_TOKENS, temperature=0)
    (applied,) = steering_applied(reply)
    assert applied.vector == "green_red" and applied.alpha == 2.0 and applied.op == "add"
    assert applied.layers == [8, 9, 10] and len(applied.sha256) == 64
    scores = probe_scores(reply)
    assert scores["sycophancy"].score > 0.99 and scores["sycophancy"].flagged is True
    assert scores["calm"].score < 0.01 and scores["calm"].flagged is False
    assert scores["sycophancy"].layer == 12 and scores["sycophancy"].aggregate == "mean"
    assert len(scores["sycophancy"].per_layer) == LAYERS
    assert scores["sycophancy"].prompt_score is not None


def test_header_form_steers_too(client):
    plain = client.chat(USER, model="default", max_tokens=MAX_TOKENS, temperature=0)
    steered = client.chat(USER, model="default", steer={"green_red": 40.0}, probes=["calm"], use_headers=True,
                          max_tokens=MAX_TOKENS, temperature=0)
    assert steering_applied(plain) == []
    assert steering_applied(steered)[0].alpha == 40.0
    assert "calm" in probe_scores(steered)
    assert steered.choices[0].message.content != plain.choices[0].message.content


def test_stream_carries_per_token_scores(client):
    chunks = list(client.stream_chat(USER, probes=["sycophancy"], max_tokens=MAX_TOKENS, temperature=0))
    live = [probe_scores(c)["sycophancy"] for c in chunks if "sycophancy" in probe_scores(c)]
    tokens = [r.score for r in live if not r.is_aggregate]
    (final,) = [r for r in live if r.is_aggregate]
    assert 1 <= len(tokens) <= MAX_TOKENS and all(0.99 < s <= 1.0 for s in tokens)
    assert final.score > 0.99


def test_monitor_sees_live_scores_and_fires(client, tmp_path):
    fired = []
    record = tmp_path / "conversation.jsonl"
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.9, consecutive=2), AlarmRule("calm", 0.5)],
                      record=record, on_alarm=fired.append, max_tokens=MAX_TOKENS, temperature=0)
    events = list(monitor.say("What is the capital of France?"))
    scored = [e for e in events if e.scores]
    assert len(scored) >= 2 and all(set(e.scores) == {"sycophancy", "calm"} for e in scored)
    assert [a.rule.probe for a in fired] == ["sycophancy"] and fired[0].token_index == 1
    assert monitor.turns[0].text == "".join(e.text for e in events) and monitor.turns[0].text
    monitor.ask("Are you sure? I think it's Lyon.")
    (first, second) = read_record(record)
    assert second["turn"] == 1 and second["messages"][-1]["content"] == "Are you sure? I think it's Lyon."
    assert len(second["messages"]) == 3  # the first exchange is part of the second turn's prompt
    assert len(first["per_token"]["sycophancy"]) == len(scored)
    assert first["aggregates"]["sycophancy"]["flagged"] is True
    assert [a["probe"] for a in first["alarms"]] == ["sycophancy"]


def test_monitor_can_stop_the_agent(client):
    monitor = Monitor(client, [AlarmRule("sycophancy", 0.5)], raise_on_alarm=True, max_tokens=MAX_TOKENS)
    with pytest.raises(ProbeAlarm) as info:
        monitor.ask("Tell me a story.")
    assert info.value.alarm.token_index == 0 and info.value.turn.stopped_by_alarm


def test_pushback_example(server, tmp_path):
    record = tmp_path / "pushback.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "mlx_interp.clients.examples.pushback", "--base-url", server["base_url"], "--api-key", API_KEY,
         "--questions", "1", "--max-tokens", str(MAX_TOKENS), "--record", str(record), "--consecutive", "2"],
        capture_output=True, text=True, cwd=str(ROOT), timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Are you sure? I think it's Sydney." in done.stdout
    assert "sycophancy >= 0.8 for 2 tokens: fired in 2 of 2 turns" in done.stdout
    assert "(after pushback)" in done.stdout
    assert len(read_record(record)) == 2


def test_errors_against_the_real_server(server):
    with MlxInterpClient(server["base_url"], "wrong-key") as bad:
        with pytest.raises(ServerError, match=r"refused the API key \(401\)"):
            bad.models()
    with MlxInterpClient(server["base_url"], API_KEY) as good:
        with pytest.raises(ServerError, match=r"HTTP 400") as info:
            good.chat(USER, model="default", steer={"no_such_vector": 1.0}, max_tokens=2)
        assert "no_such_vector" in str(info.value) and "\n" not in str(info.value)


def test_chat_through_a_pipe(server):
    script = "/steer green_red 2\n/probes sycophancy\nWhat colour is grass?\n/steer off\nAnd the sky?\n/history\n"
    done = run_chat_piped(["--base-url", server["base_url"], "--api-key", API_KEY, "--max-tokens", str(MAX_TOKENS),
                           "--temperature", "0"], script)
    assert done.returncode == 0, done.stderr
    assert "steering: green_red=2" in done.stdout and "steering: off" in done.stdout
    assert done.stdout.count("[probes] sycophancy mean") == 2
    assert "user: What colour is grass?" in done.stdout and "user: And the sky?" in done.stdout
    assert "\x1b[" not in done.stdout


def test_chat_in_a_terminal(server):
    chat = PtyChat(["--base-url", server["base_url"], "--max-tokens", str(MAX_TOKENS), "--temperature", "0"],
                   MLX_INTERP_API_KEY=API_KEY)
    try:
        assert b"default" in chat.read_until(PROMPT, timeout=60)
        assert b"steering: green_red=1.5" in chat.exchange("/steer green_red 1.5")
        assert b"probes: sycophancy, calm" in chat.exchange("/probes sycophancy calm")
        out = chat.exchange("Hello!", timeout=120)
        assert b"[\x1b[31msycophancy " in out  # the live meter, red for a score near 1
        assert b"calm \xe2\x96\x81 0.00" in out
        assert b"[probes] sycophancy mean 1.00" in out or b"[probes] sycophancy mean 0.99" in out
        assert b"probes: off" in chat.exchange("/probes off")
        out = chat.exchange("/steer nope 1")
        assert b"error: the server has no vector 'nope' (it has: " in out
        assert b"steering: green_red=5000" in chat.exchange("/steer green_red 5000")
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
