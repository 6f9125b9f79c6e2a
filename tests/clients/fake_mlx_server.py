"""A small HTTP server that answers with the shapes of api.md, for the client unit tests.

It records every request it gets (path, headers, body) so tests can check what
the helpers sent, and plays a scripted reply: tokens with per-token probe
scores, streamed as SSE or returned whole. The real server is exercised in
test_server_e2e.py; this one makes the parsing and error paths fast to test.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROBE_LAYERS = 4


@dataclass
class Script:
    tokens: list[str] = field(default_factory=lambda: ["The", " answer", " is", " 4", "."])
    # per-token score of every probe asked for (same list for each probe unless given per probe)
    scores: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.9, 0.95, 0.3])
    per_probe: dict[str, list[float]] = field(default_factory=dict)
    vectors: tuple[str, ...] = ("green_red", "calm")
    max_alpha: float = 100.0
    probes: tuple[str, ...] = ("sycophancy", "emotion")
    threshold: float = 0.8
    stream_token_scores: bool = True  # False: only the final chunk carries scores
    fail_after: int | None = None  # stream an in-band error event after this many tokens


class FakeServer:
    def __init__(self, api_key: str | None = None, script: Script | None = None):
        self.api_key = api_key
        self.script = script or Script()
        self.requests: list[dict] = []
        handler = type("Handler", (_Handler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- replies ---------------------------------------------------------------------------

    def scores_for(self, name: str) -> list[float]:
        return self.script.per_probe.get(name, self.script.scores)

    def aggregate(self, name: str, options: dict) -> dict:
        per_token = self.scores_for(name)[: len(self.script.tokens)]
        mean = sum(per_token) / len(per_token)
        threshold = options.get("threshold", self.script.threshold)
        result = {
            "score": mean,
            "layer": 2,
            "aggregate": "mean",
            "per_layer": [None, 0.4, mean, 0.5][:PROBE_LAYERS],
            "prompt_score": 0.25,
            "threshold": threshold,
            "flagged": mean > threshold,
        }
        if options.get("per_token"):
            result["per_token"] = per_token
        return result


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _parse_steer(body: dict, headers) -> list[dict]:
    steer = body.get("steer")
    if steer is None and headers.get("X-Steer"):
        steer = {}
        for part in headers["X-Steer"].split(","):
            name, _, alpha = part.strip().partition("=")
            steer[name] = float(alpha)
    if steer is None:
        return []
    if isinstance(steer, dict):
        steer = [{"vector": k, "alpha": v} for k, v in steer.items()]
    return [
        {"vector": s["vector"], "alpha": s.get("alpha", 1.0), "op": s.get("op", "add"),
         "layers": s.get("layers", [1, 2]), "scope": s.get("scope", "all"), "sha256": "ab" * 32}
        for s in steer
    ]


def _parse_probes(body: dict, headers, known) -> dict[str, dict]:
    probes = body.get("probes")
    if probes is None and headers.get("X-Probes"):
        probes = [p.strip() for p in headers["X-Probes"].split(",")]
    if probes is None:
        return {}
    if probes == "all":
        return {name: {} for name in known}
    if isinstance(probes, list):
        return {name: {} for name in probes}
    return dict(probes)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, payload: dict, extra_headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if self.fake.api_key is None:
            return True
        return self.headers.get("Authorization") == f"Bearer {self.fake.api_key}"

    def _record(self, body: dict | None) -> None:
        self.fake.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})

    def do_GET(self) -> None:  # noqa: N802
        self._record(None)
        script = self.fake.script
        if self.path == "/health":
            return self._send(200, {"status": "ok"})
        if not self._authorized():
            return self._send(*_error(401, "invalid API key", "authentication_error", code="invalid_api_key"))
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [{"id": "tiny-model", "object": "model", "created": 0, "owned_by": "mlx-interp"}]})
        if self.path == "/v1/probes":
            return self._send(200, {"object": "list", "data": [{"name": n, "description": f"{n} probe"} for n in script.probes]})
        if self.path == "/v1/steering/vectors":
            return self._send(200, {"object": "list", "data": [{"name": n, "description": f"{n} vector"} for n in script.vectors]})
        return self._send(*_error(404, f"no route {self.path}", "not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self._record(body)
        if not self._authorized():
            return self._send(*_error(401, "invalid API key", "authentication_error", code="invalid_api_key"))
        if self.path != "/v1/chat/completions":
            return self._send(*_error(404, f"no route {self.path}", "not_found_error"))
        script = self.fake.script
        steer = _parse_steer(body, self.headers)
        # The real server's wording (test_clients_chat_real_server.py pins it there).
        for i, s in enumerate(steer):
            if abs(s["alpha"]) > script.max_alpha:
                message = f"steer[{i}]: |alpha| must be at most {script.max_alpha:g} for add (--max-alpha), got {float(s['alpha'])!r}"
                return self._send(*_error(400, message, "invalid_request_error", "steer"))
        for s in steer:
            if s["vector"] not in script.vectors:
                known = ", ".join(sorted(script.vectors))
                message = f"unknown steering vector {s['vector']!r} (loaded: {known})"
                return self._send(*_error(400, message, "invalid_request_error", "steer", "unknown_vector"))
        probes = _parse_probes(body, self.headers, script.probes)
        for name in probes:
            if name not in script.probes:
                known = ", ".join(sorted(script.probes))
                return self._send(*_error(400, f"unknown probe {name!r} (loaded: {known})", "invalid_request_error", "probes", "unknown_probe"))
        steering = {"applied": steer} if steer else None
        if body.get("stream"):
            return self._stream(body, probes, steering)
        choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
                  "message": {"role": "assistant", "content": "".join(script.tokens)}}
        if probes:
            choice["probes"] = {n: self.fake.aggregate(n, o) for n, o in probes.items()}
        reply = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body.get("model"),
                 "choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": len(script.tokens), "total_tokens": 3 + len(script.tokens)}}
        if steering:
            reply["steering"] = steering
        return self._send(200, reply)

    def _stream(self, body: dict, probes: dict, steering: dict | None) -> None:
        script = self.fake.script
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": body.get("model")}

        def emit(choice: dict, **top) -> None:
            payload = {**base, "choices": [choice], **top}
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        top = {"steering": steering} if steering else {}
        emit({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}, **top)
        for i, token in enumerate(script.tokens):
            if script.fail_after is not None and i == script.fail_after:
                error = {"error": {"message": "generation failed: out of memory", "type": "server_error", "param": None, "code": None}}
                self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True
                return
            choice = {"index": 0, "delta": {"content": token}, "finish_reason": None}
            if probes and script.stream_token_scores:
                choice["probes"] = {n: {"score": self.fake.scores_for(n)[i]} for n in probes}
            emit(choice)
        final = {"index": 0, "delta": {}, "finish_reason": "stop"}
        if probes:
            final["probes"] = {n: self.fake.aggregate(n, {**o, "per_token": True}) for n, o in probes.items()}
        emit(final)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True
