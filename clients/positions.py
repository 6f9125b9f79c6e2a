"""Where the server reads each probe (GET /v1/probes, api.md section 4): only `token` probes have per-token scores.

Asking a server for `per_token` scores of a probe read once per reply
(`prompt_last`, `answer_end`) is a 400, so clients ask for them only where the
probe has them.
"""

from __future__ import annotations

from typing import Any

PER_TOKEN = "token"


class ProbePositions:
    """Probe name -> position, looked up once per client; a probe the server does not describe counts as per token."""

    def __init__(self, client: Any):
        self.client = client
        self._positions: dict[str, str] | None = None

    def __call__(self, name: str) -> str:
        if self._positions is None:
            self._positions = {}
            try:
                listed = self.client.probes()
            except Exception:  # noqa: BLE001 - an older server or a stub without the listing: per token
                listed = []
            for item in listed or []:
                if isinstance(item, dict) and isinstance(item.get("position"), str):
                    self._positions[str(item.get("name"))] = item["position"]
        return self._positions.get(name, PER_TOKEN)

    def per_token(self, name: str) -> bool:
        return self(name) == PER_TOKEN

    def request(self, names) -> dict:
        """The `probes` field asking for per-token scores wherever a probe has them."""
        return {name: {"per_token": self.per_token(name)} for name in names}
