"""Strict JSON in and out: NaN and Infinity are refused on input and never emitted.

The body is read chunk by chunk so an oversized request is refused (413)
without holding more than the limit in memory.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from .errors import BadRequest, PayloadTooLarge, as_api_error


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
        return json.loads(data, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest("request body nests JSON too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


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
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes (--max-body-bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request, limit: int) -> dict:
    body = await read_body(request, limit)
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
