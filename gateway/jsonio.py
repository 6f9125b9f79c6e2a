"""Strict JSON in and out: NaN and Infinity are refused on input and never emitted.

The body is read chunk by chunk so an oversized request is refused (413)
without holding more than the limit in memory.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from .errors import BadRequest, ClientGone, PayloadTooLarge, UnsupportedMediaType, as_api_error


def _refuse_constant(token: str):
    raise ValueError(f"{token} is not valid JSON")


def loads(data: bytes | str) -> Any:
    """Parse strict JSON; raises BadRequest naming what is wrong."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest("request body nests JSON too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(data):
        _refuse_lone_surrogates(obj)
    return obj


# JSON may spell a UTF-16 surrogate as an escape; a lone one is no character and breaks every encoder later.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(obj) -> None:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("request body holds a lone UTF-16 surrogate (\\ud800-\\udfff) in a string; that is not text") from None


def nesting_depth(obj) -> int:
    """How deeply lists and objects nest in obj (iterative: safe for any depth json.loads let through)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def dumps(obj: Any) -> bytes:
    """Compact JSON; a non-finite float is a bug upstream and raises ValueError."""
    return json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def read_body(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length header {declared[:40]!r} is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"request body is {size} bytes; the limit is {limit} (--max-body-bytes)")
    chunks, total = [], 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes (--max-body-bytes)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending the request body") from None
    return b"".join(chunks)


def check_json_content_type(headers) -> None:
    """JSON bodies must say so: a cross-site form (text/plain) must not reach a JSON route without a CORS preflight."""
    given = headers.get("content-type", "")
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    shown = given[:60] if given else "none"
    raise UnsupportedMediaType(f"Content-Type must be application/json, got {shown}", param="Content-Type")


async def read_json_object(request, limit: int) -> dict:
    check_json_content_type(request.headers)
    body = await read_body(request, limit)
    return await run_in_threadpool(parse_object, body)


def parse_object(body: bytes) -> dict:
    """A request body that must be one JSON object (run off the event loop: bodies can be megabytes)."""
    if not body.strip():
        raise BadRequest("request body is empty; expected a JSON object")
    data = loads(body)
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(data).__name__ if data is not None else 'null'}")
    return data


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


# The error body goes out through the strict encoder too. It lives here, not in
# errors.py, so that errors.py imports nothing of the gateway (no import loop).
def error_response(exc: BaseException) -> JSONResponse:
    err = as_api_error(exc)
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def starlette_handler(request, exc) -> JSONResponse:
    return error_response(exc)
