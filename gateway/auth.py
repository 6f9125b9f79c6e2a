"""API keys: one guards every route but /health, a separate admin key guards uploads and deletions.

Keys come as `Authorization: Bearer KEY` (what the openai client sends) or
`X-API-Key: KEY`, and are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from .errors import Forbidden, Unauthorized

OPEN_PATHS = frozenset({"/health"})


@dataclass(frozen=True)
class Keys:
    api_key: str | None = None
    admin_key: str | None = None


def presented_key(headers) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return headers.get("x-api-key")


def _matches(given: str | None, expected: str | None) -> bool:
    return given is not None and expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def check_api(keys: Keys, headers) -> None:
    """401 unless the request carries the API key (or the admin key); no-op when no API key is set."""
    if keys.api_key is None:
        return
    given = presented_key(headers)
    if _matches(given, keys.api_key) or _matches(given, keys.admin_key):
        return
    if given is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    raise Unauthorized("invalid API key")


def check_admin(keys: Keys, headers) -> None:
    """403 unless the request carries the admin key; with no keys at all (loopback only) anyone local may."""
    if keys.admin_key is None:
        if keys.api_key is None:
            return
        raise Forbidden("uploading and deleting need an admin key; start the server with --admin-key")
    if not _matches(presented_key(headers), keys.admin_key):
        raise Forbidden("this operation needs the admin key")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
