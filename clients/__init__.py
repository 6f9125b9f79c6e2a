"""Client side of mlx-interp: talks HTTP to a running server, imports no server code.

- `Steer`, `ProbeRequest`, `steer_body` / `steer_header`, `probes_body` / `probes_header`,
  `extension_body`: build the extension fields for the official `openai` client.
- `probe_scores`, `steering_applied`, `ProbeResult`, `AppliedSteer`: read them back
  from responses and stream chunks.
- `MlxInterpClient`: `openai.OpenAI` with steering and probes as arguments.
- `clients.monitor`: watch an agent's streamed replies and raise or call back on a probe alarm;
  `ServerGuard` rules run inside the server's decode loop instead (stop, steer, cap), and
  `guard_fired` reads back what fired.
"""

from __future__ import annotations

from .errors import ServerError
from .extensions import (
    ProbeRequest,
    ServerGuard,
    Steer,
    extension_body,
    guard_json,
    parse_steer_text,
    probes_body,
    probes_header,
    steer_body,
    steer_header,
)
from .readers import AppliedSteer, GuardFired, ProbeResult, chunk_text, guard_fired, probe_scores, steering_applied

__all__ = [
    "AlarmRule",
    "AppliedSteer",
    "GuardFired",
    "MlxInterpClient",
    "Monitor",
    "ProbeAlarm",
    "ProbeRequest",
    "ProbeResult",
    "ServerError",
    "ServerGuard",
    "Steer",
    "chunk_text",
    "extension_body",
    "guard_fired",
    "guard_json",
    "parse_steer_text",
    "probe_scores",
    "probes_body",
    "probes_header",
    "steer_body",
    "steer_header",
    "steering_applied",
]

# these import the `openai` package (about a second); load them on first use so that
# `mlx-interp --help` and the chat command's registration stay quick
_LAZY = {"MlxInterpClient": ".client", "Monitor": ".monitor", "AlarmRule": ".monitor", "ProbeAlarm": ".monitor"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'clients' has no attribute {name!r}")
