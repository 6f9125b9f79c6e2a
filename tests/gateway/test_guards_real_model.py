"""Guards on the default model with the shipped probes and vector, through a real server and the `openai` client.

The rule thresholds are read off an unguarded greedy run of the same request:
`above` just under the score of a token whose score rises above every earlier
one makes the rule fire exactly there, so each test knows which token fires
and what must (and must not) change after it. The probe is a shipped one that
is read per token (api.md section 4).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI

from gateway_helpers import ROOT, ServerProcess

pytestmark = [pytest.mark.server, pytest.mark.integration]

API_KEY = "guard-key"
TOKENS = 16
VECTOR = "green_red"  # shipped steering vector
STEER_ALPHA = 8.0  # far past coherent on the 135M model: the text after the fire must change
MESSAGES = [{"role": "user", "content": "Is Paris the capital of France? Explain briefly."}]
OTHER = [{"role": "user", "content": "Name three colours of the rainbow."}]
CANCEL_WAIT_S = 60  # generous bound for the batch to empty on a loaded 2-core machine


def _token_probe() -> str:
    """A shipped probe the server reads at every token (the kind a per-token guard needs)."""
    from mlx_interp.probes.positions import TOKEN, declared_position

    names = [json.loads(p.read_text())["name"] for p in sorted((ROOT / "probes" / "library").glob("*.json"))
             if declared_position(json.loads(p.read_text())) == TOKEN]
    assert names, "no shipped probe is read per token"
    return "concession" if "concession" in names else names[0]


PROBE = _token_probe()


@pytest.fixture(scope="module")
def server():
    s = ServerProcess("--model", "default", "--api-key", API_KEY)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)


def _stream(client, messages=MESSAGES, **extra):
    """[(token text, chunk choice extras)] of a greedy stream, and its finish_reason."""
    body = {"probes": {PROBE: {"per_token": True}}, **extra}
    stream = client.chat.completions.create(model="default", messages=messages, max_tokens=TOKENS, temperature=0,
                                            stream=True, logprobs=True, extra_body=body)
    tokens, extras, finish = [], [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        c = chunk.choices[0]
        if c.logprobs and c.logprobs.content:
            tokens += [e.token for e in c.logprobs.content]
            extras.append(c.model_extra or {})
        elif c.model_extra and c.model_extra.get("guard"):
            extras.append(c.model_extra)
        finish = c.finish_reason or finish
    return tokens, extras, finish


def _per_token_scores(extras) -> list[float]:
    return [e["probes"][PROBE]["score"] for e in extras if e.get("probes", {}).get(PROBE, {}).get("score") is not None
            and "per_token" not in e["probes"][PROBE]]


def _fire_point(scores, lo=1, hi=None):
    hi = len(scores) if hi is None else hi
    for t in range(lo, hi):
        if scores[t] - max(scores[:t]) > 1e-4:
            return t, scores[t] - 1e-5
    pytest.fail(f"no token of the unguarded run rises above the ones before it: {scores}")


@pytest.fixture(scope="module")
def plain(client):
    tokens, extras, finish = _stream(client)
    scores = _per_token_scores(extras)
    assert len(scores) == len(tokens) == TOKENS, (tokens, scores)
    return tokens, scores


def test_guard_stops_a_stream_with_content_filter(client, plain):
    tokens, scores = plain
    t, above = _fire_point(scores)
    got, extras, finish = _stream(client, guard=[{"probe": PROBE, "above": above, "then": "stop"}])
    assert finish == "content_filter"
    assert got == tokens[: t + 1]
    fired = [e["guard"]["fired"] for e in extras if e.get("guard")]
    assert fired == [[{"rule": 0, "token_index": t, "score": pytest.approx(scores[t], abs=1e-5), "action": "stop"}]]


def test_guard_steers_mid_stream(client, plain):
    tokens, scores = plain
    t, above = _fire_point(scores, hi=TOKENS - 4)
    rule = {"probe": PROBE, "above": above, "then": "steer", "steer": {VECTOR: STEER_ALPHA}}
    got, extras, finish = _stream(client, guard=[rule])
    fired = [f for e in extras if e.get("guard") for f in e["guard"]["fired"]]
    assert [(f["token_index"], f["action"]) for f in fired] == [(t, "steer")]
    assert got[: t + 2] == tokens[: t + 2]  # up to the token sampled before the reading existed
    assert got[t + 2:] != tokens[t + 2:]  # steered from there on


def test_a_guard_never_touches_its_batch_neighbour(client, plain):
    tokens, scores = plain
    t, above = _fire_point(scores, hi=TOKENS - 4)
    rule = {"probe": PROBE, "above": above, "then": "steer", "steer": {VECTOR: STEER_ALPHA}}
    guarded_alone, _, _ = _stream(client, guard=[rule])
    other_alone, _, _ = _stream(client, OTHER)
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(_stream, client, MESSAGES, guard=[rule])
        b = pool.submit(_stream, client, OTHER)
        guarded, other = a.result()[0], b.result()[0]
    assert guarded == guarded_alone and guarded != tokens
    assert other == other_alone


def test_cancelling_a_guarded_stream_frees_its_row(client, server):
    never = [{"probe": PROBE, "above": 1.0, "for_tokens": 64, "then": "stop"}]
    stream = client.chat.completions.create(model="default", messages=MESSAGES, max_tokens=4000, temperature=0, stream=True,
                                            extra_body={"guard": never})
    seen = 0
    for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen >= 3:
            break
    stream.close()
    deadline = time.monotonic() + CANCEL_WAIT_S
    while httpx.get(server.url + "/health", timeout=10).json()["batch_size"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(server.url + "/health", timeout=10).json()["batch_size"] == 0
    assert server.alive()
