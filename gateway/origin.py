"""Browser-facing checks: a web page must not act on a server it was never meant to reach.

- DNS rebinding: a page at http://evil.example can make its name resolve to
  127.0.0.1 and then talk to a keyless loopback server as "evil.example". So
  with no API key on loopback, the Host header must name the server itself.
- Cross-site uploads: a page from a foreign Origin may not upload or delete
  vectors and probes, whatever its Content-Type. Origins listed with
  --cors-origin, and the server's own origin, may.
"""

from __future__ import annotations

from .errors import Forbidden

ARTIFACT_ROUTES = ("/v1/steering/vectors", "/v1/probes")
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def check_host(allowed: frozenset | None, headers) -> None:
    if allowed is None:
        return
    host = headers.get("host", "").strip().lower()
    if host not in allowed:
        raise Forbidden(
            f"Host {host[:80]!r} is not a name of this server; without an API key it only answers to "
            "localhost, 127.0.0.1 and [::1]",
            param="Host",
            code="host_not_allowed",
        )


def check_origin(scope, headers, cors_origins) -> None:
    if scope["method"] not in STATE_CHANGING or not scope["path"].startswith(ARTIFACT_ROUTES):
        return
    origin = headers.get("origin")
    if origin is None:
        return  # not a browser, or a same-origin GET-like request
    own = {f"{scheme}://{headers.get('host', '')}" for scheme in ("http", "https")}
    if origin in cors_origins or origin in own:
        return
    raise Forbidden(
        f"uploads and deletes from origin {origin[:80]!r} are refused; allow it with --cors-origin",
        param="Origin",
        code="origin_not_allowed",
    )
