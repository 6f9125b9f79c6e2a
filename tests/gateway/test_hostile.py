"""Heavy and hostile use (issue 14): bounded work, fair admission, failures that surface, a hardened edge.

Each test drives a real server process; none asserts a speed (bench/ measures those).
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from gateway_helpers import ServerProcess, make_probe, make_vector, sse_events, validate

pytestmark = pytest.mark.server

EOS_BAN = {"258": -100}  # the tiny tokenizer's <|im_end|>: rows run to max_tokens
HEADER_TIMEOUT_S = 1
MAX_CONNECTIONS = 8
MAX_BATCH = 16
WAIT_S = 120  # upper bound on waiting for something that must happen (a loaded 2-core machine)


@pytest.fixture(scope="module")
def hostile_artifacts(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-artifacts")
    make_vector(tiny_llama, "push", root / "vectors", seed=1)
    # float32 overflows past 3.4e38: alpha 50 (the add limit) on this vector makes the residual stream infinite
    make_vector(tiny_llama, "huge", root / "vectors", seed=5, layers=(0, 1, 2, 3), alpha=1.0, scale=3e37)
    make_probe(tiny_llama, "alpha_probe", root / "probes", seed=3)
    return root


@pytest.fixture(scope="module")
def keyless(tiny_model_dirs, hostile_artifacts):
    """No API key on loopback (the default mode), small prefill chunks, a tight connection cap and head deadline."""
    server = ServerProcess(
        "--model", str(tiny_model_dirs["llama"]),
        "--vectors", str(hostile_artifacts / "vectors"), "--probes", str(hostile_artifacts / "probes"),
        "--max-batch", str(MAX_BATCH), "--prefill-chunk-tokens", "8",
        "--header-timeout-s", str(HEADER_TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS),
    )
    yield server
    server.stop()


def _post(url, path, body, **kw):
    return httpx.post(url + path, json=body, timeout=WAIT_S, **kw)


def _health(url) -> dict:
    return httpx.get(url + "/health", timeout=WAIT_S).json()


def _error(r: httpx.Response, status: int, param=None) -> dict:
    assert r.status_code == status, r.text
    validate(r.json(), "ErrorResponse")
    if param is not None:
        assert r.json()["error"]["param"] == param, r.text
    return r.json()["error"]


# -- the edge --------------------------------------------------------------------------------------


def test_keyless_loopback_refuses_foreign_host_names(keyless):
    """DNS rebinding: a page at evil.example resolving to 127.0.0.1 must not reach the keyless server."""
    for host in ("evil.example", "evil.example:%d" % keyless.port, "127.0.0.1.evil.example"):
        r = httpx.get(keyless.url + "/v1/models", headers={"Host": host}, timeout=WAIT_S)
        assert _error(r, 403, "Host")["code"] == "host_not_allowed"
    for host in ("localhost:%d" % keyless.port, "127.0.0.1:%d" % keyless.port, "localhost"):
        assert httpx.get(keyless.url + "/v1/models", headers={"Host": host}, timeout=WAIT_S).status_code == 200


def test_cross_site_upload_is_refused(keyless, tiny_llama, tmp_path):
    import base64

    vector = make_vector(tiny_llama, "planted", tmp_path)
    body = {"name": "planted", "metadata": json.loads((tmp_path / "planted.json").read_text()),
            "safetensors": base64.b64encode((tmp_path / "planted.safetensors").read_bytes()).decode()}
    assert vector.name == "planted"
    # a plain HTML form can send text/plain without a preflight
    form = httpx.post(keyless.url + "/v1/steering/vectors", content=json.dumps(body),
                      headers={"Content-Type": "text/plain", "Origin": "http://evil.example"}, timeout=WAIT_S)
    _error(form, 403, "Origin")
    bare = httpx.post(keyless.url + "/v1/steering/vectors", content=json.dumps(body),
                      headers={"Content-Type": "text/plain"}, timeout=WAIT_S)
    _error(bare, 415, "Content-Type")
    scripted = _post(keyless.url, "/v1/steering/vectors", body, headers={"Origin": "http://evil.example"})
    assert _error(scripted, 403, "Origin")["code"] == "origin_not_allowed"
    names = [v["name"] for v in httpx.get(keyless.url + "/v1/steering/vectors", timeout=WAIT_S).json()["data"]]
    assert "planted" not in names
    own = _post(keyless.url, "/v1/steering/vectors", body, headers={"Origin": keyless.url})  # the server's own page
    assert own.status_code == 201, own.text
    assert httpx.delete(keyless.url + "/v1/steering/vectors/planted", timeout=WAIT_S).status_code == 200


def test_metrics_keep_a_fixed_label_set(keyless):
    with httpx.Client(base_url=keyless.url, timeout=WAIT_S) as c:
        for i in range(30):
            c.request(f"MADEUP{i}", "/health")
        text = c.get("/metrics").text
    assert "MADEUP" not in text
    assert 'method="other"' in text


def _open_slow(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its head
    return s


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except (ConnectionResetError, socket.timeout):
        return True


def test_slow_heads_are_dropped_and_connections_capped(keyless):
    socks = [_open_slow(keyless.port) for _ in range(MAX_CONNECTIONS + 6)]
    try:
        for s in socks:  # every one is closed: over the cap at once, the rest at the head deadline
            assert _closed_by_server(s)
    finally:
        for s in socks:
            s.close()
    assert httpx.get(keyless.url + "/health", timeout=WAIT_S).status_code == 200
    log = keyless.log()
    assert log.count("refusing connections") == 1  # a flood is logged once, not per accept
    assert log.count("closing connections that sent no complete request head") == 1


def _no_constants(token):
    raise AssertionError(f"{token} on the wire")


# -- numerics ----------------------------------------------------------------------------------------


def test_non_finite_steering_fails_only_that_request(keyless):
    url = keyless.url
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    # prompt and generation: the prompt's own logits go non-finite
    r = _post(url, "/v1/chat/completions", {**chat, "steer": {"huge": 50.0}, "logprobs": True})
    err = _error(r, 400, "steer")
    assert err["code"] == "non_finite_activations" and "huge" in err["message"]
    # generation only: the first decode step goes non-finite, in a stream, next to a healthy request
    steered = {**chat, "steer": [{"vector": "huge", "alpha": 50.0, "scope": "generation"}], "logprobs": True,
               "top_logprobs": 2, "stream": True, "logit_bias": EOS_BAN}
    plain = {**chat, "logit_bias": EOS_BAN, "max_tokens": 8}
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("plain", _post(url, "/v1/chat/completions", plain)))
    t.start()
    r = _post(url, "/v1/chat/completions", steered)
    t.join(WAIT_S)
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    errors = [e for e in events[:-1] if "error" in e]
    assert len(errors) == 1 and errors[0]["error"]["param"] == "steer", events
    for block in r.text.split("\n\n"):  # strict JSON on the wire: no NaN or Infinity tokens
        if block.strip() and block.strip() != "data: [DONE]":
            json.loads(block.strip()[len("data: "):], parse_constant=_no_constants)
    assert out["plain"].status_code == 200
    assert out["plain"].json()["usage"]["completion_tokens"] == 8
    assert "Traceback" not in keyless.log()


# -- bounded work and fair admission -----------------------------------------------------------------------


class HealthWatch:
    """Polls /health while a test runs: the most slots (rows plus prefills) ever seen in use."""

    def __init__(self, url):
        self.url, self.most, self.samples, self._stop = url, 0, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            h = _health(self.url)
            self.most = max(self.most, h["batch_size"] + h["prefilling"])
            self.samples += 1

    def stop(self):
        self._stop.set()
        self._t.join(WAIT_S)


def _wait_for(predicate, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_256_row_request_stays_in_the_batch_and_does_not_starve_a_small_one(keyless):
    url = keyless.url
    big = {"model": "default", "prompt": [f"prompt number {i}" for i in range(16)], "n": 16, "max_tokens": 12,
           "temperature": 0, "logit_bias": EOS_BAN}
    small = {"model": "default", "prompt": "small", "max_tokens": 3, "temperature": 0, "logit_bias": EOS_BAN}
    done = {}

    def run(name, body):
        r = _post(url, "/v1/completions", body)
        done[name] = (time.monotonic(), r)

    watch = HealthWatch(url)
    try:
        t_big = threading.Thread(target=run, args=("big", big))
        t_big.start()
        assert _wait_for(lambda: _health(url)["batch_size"] > 0)
        t_small = threading.Thread(target=run, args=("small", small))
        t_small.start()
        t_small.join(WAIT_S)
        t_big.join(WAIT_S * 3)
    finally:
        watch.stop()
    big_at, big_r = done["big"]
    small_at, small_r = done["small"]
    assert big_r.status_code == 200 and small_r.status_code == 200
    assert len(big_r.json()["choices"]) == 256
    assert all(c["finish_reason"] == "length" for c in big_r.json()["choices"])
    assert watch.samples > 0 and watch.most <= MAX_BATCH
    assert small_at < big_at  # admitted as the first slot freed, not after 256 rows


def test_a_long_prefill_lets_a_short_request_finish_first(keyless):
    url = keyless.url
    long_body = {"model": "default", "prompt": "abcd " * 200, "max_tokens": 1, "temperature": 0}  # 1000 tokens, 125 chunks
    short_body = {"model": "default", "prompt": "hi", "max_tokens": 3, "temperature": 0, "logit_bias": EOS_BAN}
    done = {}

    def run(name, body):
        r = _post(url, "/v1/completions", body)
        done[name] = (time.monotonic(), r)

    t_long = threading.Thread(target=run, args=("long", long_body))
    t_long.start()
    assert _wait_for(lambda: _health(url)["prefilling"] > 0 or "long" in done)
    assert "long" not in done, "the long prompt finished before the test could look: make it longer"
    run("short", short_body)
    t_long.join(WAIT_S)
    assert done["short"][1].status_code == 200 and done["long"][1].status_code == 200
    assert done["short"][0] < done["long"][0]


def _prefill_chunks(url) -> int:
    for line in httpx.get(url + "/metrics", timeout=WAIT_S).text.splitlines():
        if line.startswith("mlx_interp_prefill_chunks_total "):
            return int(line.split()[1])
    raise AssertionError("no prefill_chunks_total in /metrics")


def test_a_client_that_leaves_mid_prefill_stops_between_chunks(keyless):
    url = keyless.url
    prompts = [f"{w} " * 250 for w in ("wxyz", "mnop", "qrst", "efgh")]  # distinct: no cache, 125 chunks each
    body = {"model": "default", "prompt": prompts, "n": 4, "max_tokens": 4, "temperature": 0, "stream": True}
    before = _prefill_chunks(url)
    with httpx.Client(timeout=WAIT_S) as c:
        with c.stream("POST", url + "/v1/completions", json=body):
            assert _wait_for(lambda: _health(url)["prefilling"] > 0)
    # the client is gone: its prompts leave the line at the next chunk boundary
    assert _wait_for(lambda: _health(url)["prefilling"] == 0 and _health(url)["batch_size"] == 0)
    assert _prefill_chunks(url) - before < 4 * 125


# -- failures that surface ---------------------------------------------------------------------------------


def test_model_thread_death_fails_requests_and_exits_non_zero(tiny_model_dirs):
    from mlx_interp.gateway.cli import EXIT_MODEL_THREAD_DIED
    from mlx_interp.gateway.engine import FAULT_ENV

    server = ServerProcess("--model", str(tiny_model_dirs["llama"]), env={FAULT_ENV: "3"})
    try:
        body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "logit_bias": EOS_BAN}
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=WAIT_S)
        assert _error(r, 503)["type"] == "server_error"
        assert server.proc.wait(timeout=WAIT_S) == EXIT_MODEL_THREAD_DIED
    finally:
        server.stop()
    assert "model thread stopped" in server.log_path.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_for_the_configured_time_then_ends_streams_cleanly(tiny_model_dirs, sig):
    server = ServerProcess("--model", str(tiny_model_dirs["llama"]), "--drain-s", "2", "--max-tokens", "200000",
                           "--max-request-tokens", "300000")
    try:
        body = {"model": "default", "messages": [{"role": "user", "content": "go"}], "max_tokens": 200000,
                "logit_bias": EOS_BAN, "stream": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=WAIT_S) as r:
            lines = r.iter_lines()
            next(lines)
            server.proc.send_signal(sig)
            # a stream of 200,000 tokens would hold an undrained server for many minutes: after --drain-s the
            # engine ends it with an in-band error and [DONE], and the server exits 0 (not -SIGTERM)
            rest, deadline = [], time.time() + WAIT_S
            for line in lines:
                if line:
                    rest.append(line)
                assert time.time() < deadline, "the stream went on: the server did not act on the signal"
            assert server.proc.wait(timeout=WAIT_S) == 0, server.log()
        assert rest[-1] == "data: [DONE]"
        assert "shutting down" in rest[-2]
        assert "terminate called" not in server.log()
    finally:
        server.stop()


def test_sigterm_lets_a_short_stream_finish(tiny_model_dirs):
    server = ServerProcess("--model", str(tiny_model_dirs["llama"]), "--drain-s", "30")
    try:
        body = {"model": "default", "messages": [{"role": "user", "content": "go"}], "max_tokens": 40,
                "logit_bias": EOS_BAN, "stream": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=WAIT_S) as r:
            lines = r.iter_lines()
            next(lines)
            server.proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert server.proc.wait(timeout=WAIT_S) == 0, server.log()
        assert rest[-1] == "data: [DONE]"
        assert '"finish_reason": "length"' in rest[-2] or '"finish_reason":"length"' in rest[-2]
    finally:
        server.stop()


def test_per_token_prompt_scores_do_not_depend_on_the_chunk_size(keyless, tiny_server):
    """Echoed per-token probe scores are reduced chunk by chunk; 8-token chunks must match one 512-token pass."""
    from gateway_helpers import API_KEY

    body = {"model": "default", "prompt": "the quick brown fox jumps over the lazy dog " * 2, "max_tokens": 0,
            "echo": True, "probes": {"alpha_probe": {"per_token": True}}}
    chunked = _post(keyless.url, "/v1/completions", body).json()["choices"][0]["probes"]["alpha_probe"]
    whole = _post(tiny_server.url, "/v1/completions", body, headers={"Authorization": f"Bearer {API_KEY}"})
    whole = whole.json()["choices"][0]["probes"]["alpha_probe"]
    assert len(chunked["per_token"]) == len(whole["per_token"]) > 80
    for a, b in zip(chunked["per_token"], whole["per_token"]):
        assert a == pytest.approx(b, abs=1e-4)
    assert chunked["prompt_score"] == pytest.approx(whole["prompt_score"], abs=1e-4)
