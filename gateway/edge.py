"""The HTTP edge under uvicorn: bounded connections, a deadline for request heads, quiet floods.

- At most `max_connections` open connections: one more is closed at accept,
  before it can hold a file descriptor (mlx-lm raises the fd limit to 2048 at
  import; 2,100 half-open connections used to exhaust it).
- A connection must send a complete request head within `header_timeout_s`
  of opening (or of its previous response): slow-header clients are dropped.
- Request heads are bounded in bytes (h11), so 5,000 headers or a 70 KB header
  are refused with 431 and an OpenAI error object.
- Floods are logged once, then summarised at most every FLOOD_LOG_EVERY_S,
  never once per connection.
"""

from __future__ import annotations

import json
import logging
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import HeadersTooLarge

MAX_HEAD_BYTES = 32 * 1024  # request line + headers; h11 refuses a head that grows past this
MAX_HEADERS = 100  # header lines in one request
FLOOD_LOG_EVERY_S = 60.0

log = logging.getLogger("mlx_interp.gateway")


class FloodLog:
    """Logs the first of a kind of event, then how many more there were, at most every FLOOD_LOG_EVERY_S."""

    def __init__(self, what: str, every_s: float = FLOOD_LOG_EVERY_S):
        self.what = what
        self.every_s = every_s
        self._last = None
        self._unreported = 0

    def hit(self) -> None:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.every_s:
            extra = f" ({self._unreported} more since the last report)" if self._unreported else ""
            log.warning("%s%s", self.what, extra)
            self._last, self._unreported = now, 0
        else:
            self._unreported += 1


class RateLimitFilter(logging.Filter):
    """Lets through the first record whose message starts with one of `prefixes`, then one per window."""

    def __init__(self, prefixes: tuple[str, ...], every_s: float = FLOOD_LOG_EVERY_S):
        super().__init__()
        self.prefixes = prefixes
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for prefix in self.prefixes:
            if message.startswith(prefix):
                now = time.monotonic()
                if now - self._last.get(prefix, -1e18) < self.every_s:
                    return False
                self._last[prefix] = now
        return True


def _error_body(status: int, message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}).encode()


def edge_protocol(max_connections: int, header_timeout_s: float) -> type:
    """An h11 protocol class for uvicorn's `http=` with this server's connection limits."""
    refused = FloodLog(f"refusing connections: {max_connections} are open (--max-connections)")
    slow = FloodLog(f"closing connections that sent no complete request head within {header_timeout_s:g}s (--header-timeout-s)")

    class EdgeProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            self._head_timer = None
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                refused.hit()
                self.transport.abort()
                return
            self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_timeout)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
                slow.hit()
                self.transport.abort()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not None and self.cycle is not before:  # a complete head arrived
                self._disarm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            """An unparseable or oversized head: an OpenAI error object instead of uvicorn's plain text."""
            too_big = len(self.conn.trailing_data[0]) > MAX_HEAD_BYTES
            status, code, text = (
                (431, "headers_too_large", f"request head is larger than {MAX_HEAD_BYTES} bytes (headers too many or too long)")
                if too_big
                else (400, "invalid_http", "invalid HTTP request")
            )
            body = _error_body(status, text, code)
            head = (
                f"HTTP/1.1 {status} {'Request Header Fields Too Large' if status == 431 else 'Bad Request'}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            self.transport.write(head + body)
            self.transport.close()

    return EdgeProtocol


def check_head(scope) -> None:
    """h11 bounds a head that arrives in pieces; one that arrives whole is checked here, before any route runs."""
    headers = scope.get("headers") or []
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + sum(len(k) + len(v) + 4 for k, v in headers)
    if len(headers) > MAX_HEADERS:
        raise HeadersTooLarge(f"request has {len(headers)} headers; the limit is {MAX_HEADERS}")
    if size > MAX_HEAD_BYTES:
        raise HeadersTooLarge(f"request head is {size} bytes; the limit is {MAX_HEAD_BYTES}")


def quiet_floods() -> None:
    """One log line per kind of flood, not one per connection (asyncio's accept errors, uvicorn's bad requests)."""
    logging.getLogger("asyncio").addFilter(RateLimitFilter(("socket.accept() out of system resource",)))
    logging.getLogger("uvicorn.error").addFilter(RateLimitFilter(("Invalid HTTP request received.",)))
