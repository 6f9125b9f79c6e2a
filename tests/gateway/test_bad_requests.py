"""Bad requests, each answered with the right status and an OpenAI error object; the server stays healthy.

Data-driven: add a Case to CASES to cover a new mistake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
import pytest

from gateway_helpers import ADMIN_KEY, API_KEY
from gateway_helpers import validate
from mlx_interp.gateway.errors import MAX_MESSAGE_CHARS

pytestmark = pytest.mark.server

CHAT_PATH = "/v1/chat/completions"
TEXT_PATH = "/v1/completions"
MESSAGES = [{"role": "user", "content": "hi"}]
NO_AUTH = object()  # marker: send no Authorization header


def chat(**fields):
    return {"model": "default", "messages": MESSAGES, "max_tokens": 2, **fields}


def text(**fields):
    return {"model": "default", "prompt": "hi", "max_tokens": 2, **fields}


@dataclass
class Case:
    id: str
    body: dict | list | str | bytes | None  # dict/list/str -> JSON; bytes -> sent as is; None -> no body
    status: int
    param: str | None = None  # expected error.param, when it matters
    path: str = CHAT_PATH
    method: str = "POST"
    headers: dict | list = field(default_factory=dict)  # a list of pairs may repeat a header
    auth: object = API_KEY


CASES = [
    # -- not JSON, or not an object
    Case("malformed-json", b'{"model": "default", "messages": [', 400),
    Case("body-array", [], 400),
    Case("body-string", "hello", 400),
    Case("body-null", b"null", 400),
    Case("body-empty", b"", 400),
    Case("nan-literal", b'{"model":"default","messages":[{"role":"user","content":"hi"}],"temperature":NaN}', 400),
    Case("infinity-literal", b'{"model":"default","messages":[{"role":"user","content":"hi"}],"max_tokens":Infinity}', 400),
    Case("neg-infinity-in-steer", b'{"model":"default","messages":[{"role":"user","content":"hi"}],"steer":{"push":-Infinity}}', 400),
    Case("invalid-utf8", b'{"model":"default","messages":[{"role":"user","content":"\xff\xfe"}]}', 400),
    Case("deep-nesting", b"[" * 50000 + b"]" * 50000, 413),
    Case("deep-nesting-small", b'{"a":' + b"[" * 20000 + b"]" * 20000 + b"}", 400),
    Case("huge-body", chat(messages=[{"role": "user", "content": "x" * 100_000}]), 413),
    Case("lying-content-length", b"{}", 413, headers={"Content-Length": "999999999"}),
    # -- model
    Case("missing-model", {"messages": MESSAGES}, 400, "model"),
    Case("model-not-string", chat(model=123), 400, "model"),
    Case("unknown-model", chat(model="gpt-4o"), 404, "model"),
    Case("path-like-model", chat(model="../../etc/passwd"), 404, "model"),
    # -- messages / prompt
    Case("missing-messages", {"model": "default"}, 400, "messages"),
    Case("empty-messages", chat(messages=[]), 400, "messages"),
    Case("messages-not-list", chat(messages="hi"), 400, "messages"),
    Case("bad-role", chat(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages"),
    Case("content-int", chat(messages=[{"role": "user", "content": 5}]), 400, "messages"),
    Case("content-image", chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400, "messages"),
    Case("message-not-object", chat(messages=["hi"]), 400, "messages"),
    Case("prompt-empty", text(prompt=""), 400, "prompt", path=TEXT_PATH),
    Case("prompt-token-out-of-vocab", text(prompt=[1, 2, 10**9]), 400, "prompt", path=TEXT_PATH),
    Case("prompt-object", text(prompt={"a": 1}), 400, "prompt", path=TEXT_PATH),
    Case("too-many-prompts", text(prompt=["a"] * 17), 400, "prompt", path=TEXT_PATH),
    # -- numbers out of range or of the wrong type
    Case("max-tokens-negative", chat(max_tokens=-1), 400, "max_tokens"),
    Case("max-tokens-string", chat(max_tokens="10"), 400, "max_tokens"),
    Case("max-tokens-over-limit", chat(max_tokens=2049), 400, "max_tokens"),
    Case("max-tokens-zero-chat", chat(max_tokens=0), 400, "max_tokens"),
    Case("max-completion-tokens-float", chat(max_completion_tokens=2.5), 400, "max_completion_tokens"),
    Case("temperature-too-high", chat(temperature=5), 400, "temperature"),
    Case("temperature-string", chat(temperature="hot"), 400, "temperature"),
    Case("top-p-zero", chat(top_p=0), 400, "top_p"),
    Case("top-p-above-one", chat(top_p=1.5), 400, "top_p"),
    Case("top-k-negative", chat(top_k=-5), 400, "top_k"),
    Case("min-p-above-one", chat(min_p=2), 400, "min_p"),
    Case("n-zero", chat(n=0), 400, "n"),
    Case("n-too-many", chat(n=100), 400, "n"),
    Case("n-float", chat(n=1.5), 400, "n"),
    Case("presence-penalty-range", chat(presence_penalty=3), 400, "presence_penalty"),
    Case("frequency-penalty-bool", chat(frequency_penalty=True), 400, "frequency_penalty"),
    Case("seed-string", chat(seed="x"), 400, "seed"),
    Case("seed-huge", chat(seed=10**30), 400, "seed"),
    Case("stream-string", chat(stream="yes"), 400, "stream"),
    Case("stream-options-without-stream", chat(stream_options={"include_usage": True}), 400, "stream_options"),
    Case("scoring-only-streamed", text(max_tokens=0, stream=True), 400, "max_tokens", path=TEXT_PATH),
    Case("echo-string", text(echo="yes"), 400, "echo", path=TEXT_PATH),
    # -- stop, logprobs, logit_bias
    Case("too-many-stops", chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    Case("stop-too-long", chat(stop="x" * 200), 400, "stop"),
    Case("stop-not-strings", chat(stop=[1, 2]), 400, "stop"),
    Case("top-logprobs-without-logprobs", chat(top_logprobs=2), 400, "top_logprobs"),
    Case("top-logprobs-too-many", chat(logprobs=True, top_logprobs=50), 400, "top_logprobs"),
    Case("completion-logprobs-too-many", text(logprobs=30), 400, "logprobs", path=TEXT_PATH),
    Case("logit-bias-bad-key", chat(logit_bias={"abc": 1}), 400, "logit_bias"),
    Case("logit-bias-out-of-range", chat(logit_bias={"5": 1000}), 400, "logit_bias"),
    Case("logit-bias-token-out-of-vocab", chat(logit_bias={"99999999": 1}), 400, "logit_bias"),
    Case("tools-not-function", chat(tools=[{"type": "retrieval"}]), 400, "tools"),
    Case("functions-deprecated", chat(functions=[{"name": "f"}]), 400, "functions"),
    Case("response-format-unknown-type", chat(response_format={"type": "yaml"}), 400, "response_format.type"),
    # -- steering
    Case("steer-unknown-vector", chat(steer={"nope": 1.0}), 400, "steer"),
    Case("steer-path-like-name", chat(steer={"../../etc/passwd": 1.0}), 400, "steer"),
    Case("steer-alpha-too-large", chat(steer={"push": 1e6}), 400, "steer"),
    Case("steer-alpha-bool", chat(steer={"push": True}), 400, "steer"),
    Case("steer-alpha-string", chat(steer={"push": "1"}), 400, "steer"),
    Case("steer-layers-reversed", chat(steer=[{"vector": "push", "layers": "3-1"}]), 400, "steer"),
    Case("steer-layers-out-of-range", chat(steer=[{"vector": "push", "layers": [99]}]), 400, "steer"),
    Case("steer-layers-garbage", chat(steer=[{"vector": "push", "layers": "one-two"}]), 400, "steer"),
    Case("steer-layers-bool", chat(steer=[{"vector": "push", "layers": True}]), 400, "steer"),
    Case("steer-bad-op", chat(steer=[{"vector": "push", "op": "multiply"}]), 400, "steer"),
    Case("steer-bad-scope", chat(steer=[{"vector": "push", "scope": "sometimes"}]), 400, "steer"),
    Case("steer-clamp-without-value", chat(steer=[{"vector": "push", "op": "clamp"}]), 400, "steer"),
    Case("steer-value-without-clamp", chat(steer=[{"vector": "push", "value": 2}]), 400, "steer"),
    Case("steer-entry-unknown-key", chat(steer=[{"vector": "push", "strength": 2}]), 400, "steer"),
    Case("steer-entry-not-object", chat(steer=["push"]), 400, "steer"),
    Case("steer-wrong-type", chat(steer="push"), 400, "steer"),
    Case("steer-alpha-list-wrong-length", chat(steer=[{"vector": "push", "alpha": [1, 2]}]), 400, "steer"),
    Case("steer-too-many-entries", chat(steer=[{"vector": "push", "alpha": 1}] * 17), 400, "steer"),
    # -- probes
    Case("probes-unknown", chat(probes=["nope"]), 400, "probes"),
    Case("probes-wrong-type", chat(probes=5), 400, "probes"),
    Case("probes-path-like", chat(probes=["../x"]), 400, "probes"),
    Case("probes-threshold-out-of-range", chat(probes={"alpha_probe": {"threshold": 2}}), 400, "probes"),
    Case("probes-per-token-string", chat(probes={"alpha_probe": {"per_token": "yes"}}), 400, "probes"),
    Case("probes-unknown-option", chat(probes={"alpha_probe": {"layer": 3}}), 400, "probes"),
    # -- headers
    Case("x-steer-bad-alpha", chat(), 400, "X-Steer", headers={"X-Steer": "push=abc"}),
    Case("x-steer-nan", chat(), 400, "X-Steer", headers={"X-Steer": "push=nan"}),
    Case("x-steer-unknown", chat(), 400, "steer", headers={"X-Steer": "nope=1"}),
    Case("x-steer-no-name", chat(), 400, "X-Steer", headers={"X-Steer": "=1"}),
    Case("x-steer-too-long", chat(), 400, "X-Steer", headers={"X-Steer": "push=1," * 1000}),
    Case("x-probes-unknown", chat(), 400, "probes", headers={"X-Probes": "nope"}),
    # -- keys
    Case("no-key", chat(), 401, auth=NO_AUTH),
    Case("wrong-key", chat(), 401, auth="wrong"),
    Case("basic-auth", chat(), 401, headers={"Authorization": "Basic dXNlcjpwYXNz"}, auth=NO_AUTH),
    Case("upload-with-api-key", {"name": "x", "metadata": {}, "safetensors": ""}, 403, path="/v1/steering/vectors"),
    Case("delete-with-api-key", None, 403, path="/v1/probes/alpha_probe", method="DELETE"),
    Case("upload-unknown-field", {"name": "x", "metadata": {}, "safetensors": "", "extra": 1}, 400, path="/v1/steering/vectors", auth=ADMIN_KEY),
    Case("upload-bad-base64", {"name": "x", "metadata": {}, "safetensors": "!!!"}, 400, "safetensors", path="/v1/steering/vectors", auth=ADMIN_KEY),
    Case("upload-metadata-not-object", {"name": "x", "metadata": [], "safetensors": ""}, 400, "metadata", path="/v1/probes", auth=ADMIN_KEY),
    Case("upload-path-name", {"name": "a/b", "metadata": {}, "safetensors": ""}, 400, "name", path="/v1/probes", auth=ADMIN_KEY),
    Case("delete-unknown", None, 404, path="/v1/steering/vectors/nope", method="DELETE", auth=ADMIN_KEY),
    # -- routes
    Case("unknown-route", None, 404, path="/v1/nothing", method="GET"),
    Case("wrong-method", None, 405, path=CHAT_PATH, method="PUT"),
    Case("unknown-model-get", None, 404, "model", path="/v1/models/nope", method="GET"),
    # -- hostile input (issue 14): lenient parsing, 500s where a 4xx belongs, unbounded work
    Case("logit-bias-spaced-key", chat(logit_bias={" 5 ": 1}), 400, "logit_bias"),
    Case("logit-bias-underscore-key", chat(logit_bias={"1_0": 1}), 400, "logit_bias"),
    Case("logit-bias-plus-key", chat(logit_bias={"+5": 1}), 400, "logit_bias"),
    Case("x-steer-underscore-number", chat(), 400, "X-Steer", headers={"X-Steer": "push=1_000"}),
    Case("x-steer-infinity-word", chat(), 400, "X-Steer", headers={"X-Steer": "push=infinity"}),
    Case("x-steer-twice", chat(), 400, "X-Steer", headers=[("X-Steer", "push=1"), ("X-Steer", "pull=1")]),
    Case("x-probes-twice", chat(), 400, "X-Probes", headers=[("X-Probes", "alpha_probe"), ("X-Probes", "beta_probe")]),
    Case("five-thousand-headers", chat(), 431, headers=[(f"X-H{i}", "v") for i in range(5000)]),
    Case("seventy-kb-header", chat(), 431, headers={"X-Big": "v" * 70_000}),
    Case("content-type-text-plain", json.dumps(chat()).encode(), 415, "Content-Type", headers={"Content-Type": "text/plain"}),
    Case("content-type-form", json.dumps(chat()).encode(), 415, "Content-Type",
         headers={"Content-Type": "application/x-www-form-urlencoded"}),
    Case("upload-as-text-plain", json.dumps({"name": "x", "metadata": {}, "safetensors": ""}).encode(), 415, "Content-Type",
         path="/v1/steering/vectors", headers={"Content-Type": "text/plain"}, auth=ADMIN_KEY),
    Case("lone-surrogate-steer-key", b'{"model":"default","messages":[{"role":"user","content":"hi"}],"steer":{"\\ud800":1}}', 400),
    Case("lone-surrogate-probes-key", b'{"model":"default","messages":[{"role":"user","content":"hi"}],"probes":{"\\udfff":{}}}', 400),
    Case("lone-surrogate-prompt", b'{"model":"default","prompt":"a\\ud800b","max_tokens":2}', 400, path=TEXT_PATH),
    Case("lone-surrogate-message", b'{"model":"default","messages":[{"role":"user","content":"\\udc00"}]}', 400),
    Case("upload-metadata-600-deep", {"name": "deep", "metadata": json.loads('{"a":' * 600 + "1" + "}" * 600), "safetensors": ""},
         400, "metadata", path="/v1/steering/vectors", auth=ADMIN_KEY),
    Case("upload-metadata-too-big", {"name": "fat", "metadata": {"description": "x" * 1_100_000}, "safetensors": ""},
         413, "metadata", path="/v1/probes", auth=ADMIN_KEY),
    Case("upload-from-foreign-origin", {"name": "x", "metadata": {}, "safetensors": ""}, 403, "Origin",
         path="/v1/steering/vectors", headers={"Origin": "http://evil.example"}, auth=ADMIN_KEY),
    Case("delete-from-foreign-origin", None, 403, "Origin", path="/v1/probes/alpha_probe", method="DELETE",
         headers={"Origin": "http://evil.example"}, auth=ADMIN_KEY),
    Case("echoed-value-is-cut", chat(logit_bias={"5": "v" * 60_000}), 400, "logit_bias"),
    Case("token-budget", text(prompt=["hello"] * 16, n=16, max_tokens=2048), 400, "max_tokens", path=TEXT_PATH),
    Case("steer-layers-spec-too-long", chat(steer=[{"vector": "push", "layers": "1," * 600 + "1"}]), 400, "steer"),
    Case("steer-layers-list-too-long", chat(steer=[{"vector": "push", "layers": [1] * 2000}]), 400, "steer"),
    Case("made-up-method", None, 405, path=CHAT_PATH, method="BREW"),
]


def _send_raw(server, case: Case, headers: dict, content: bytes) -> httpx.Response:
    """Over a bare socket, for headers httpx would correct (a Content-Length that lies)."""
    import socket

    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + content)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return httpx.Response(status, content=body)


def _send(server, case: Case) -> httpx.Response:
    headers = list(case.headers.items()) if isinstance(case.headers, dict) else list(case.headers)
    names = {k.lower() for k, _ in headers}
    if case.auth is not NO_AUTH and "authorization" not in names:
        headers.append(("Authorization", f"Bearer {case.auth}"))
    if isinstance(case.body, bytes):
        content = case.body
    elif case.body is None:
        content = None
    else:
        content = json.dumps(case.body).encode()
    if content is not None and "content-type" not in names:
        headers.append(("Content-Type", "application/json"))
    if "content-length" in names:
        return _send_raw(server, case, dict(headers), content or b"")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        return c.request(case.method, case.path, content=content, headers=headers)


def test_case_ids_are_unique():
    # a duplicated id would make pytest run one case under another's name
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request(tiny_server, case):
    r = _send(tiny_server, case)
    assert r.status_code == case.status, r.text
    body = r.json()
    validate(body, "ErrorResponse")
    error = body["error"]
    assert error["message"] and "Traceback" not in error["message"]
    assert len(error["message"]) <= MAX_MESSAGE_CHARS  # echoed values are cut
    if case.param is not None:
        assert error["param"] == case.param, error
    assert httpx.get(tiny_server.url + "/health").status_code == 200


def test_server_still_generates_after_every_bad_request(tiny_server):
    # Sends the whole table itself, so it holds whatever order pytest runs the tests in.
    for case in CASES:
        assert _send(tiny_server, case).status_code == case.status, case.id
    assert httpx.get(tiny_server.url + "/health").status_code == 200
    r = httpx.post(
        tiny_server.url + CHAT_PATH, json=chat(max_tokens=3), headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
    assert "Traceback" not in tiny_server.log()
