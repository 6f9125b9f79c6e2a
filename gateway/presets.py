"""Presets: steering and probes for clients that can only set `model`.

File format (JSON):
    {"calm-default": {"model": "default", "steer": {"calm": 2.0}, "probes": ["sycophancy"],
                      "guard": [{"probe": "sycophancy", "above": 0.9, "then": "stop"}]}}

Each preset appears in GET /v1/models under its own id. `steer`, `probes` and
`guard` take the same forms as the request fields; they are checked against the loaded
libraries when a request uses the preset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mlx_interp.steering.artifacts import NAME_PATTERN

PRESET_KEYS = {"model", "steer", "probes", "guard", "description"}


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    steer: object = None
    probes: object = None
    description: str = ""
    guard: object = None  # a list of rules, as in a request (api.md section 4b)


def _constant(token):
    raise ValueError(f"{token} is not valid JSON")


def load_presets(path: str | Path, model_ids: tuple[str, ...]) -> dict[str, Preset]:
    """Read and check a preset file; ValueError naming the file and the preset on any problem."""
    path = Path(path).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_constant)
    except FileNotFoundError:
        raise ValueError(f"preset file {path} not found") from None
    except ValueError as exc:
        raise ValueError(f"preset file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"preset file {path} must hold a JSON object mapping names to presets")
    presets = {}
    for name, body in data.items():
        where = f"preset file {path}, preset {name!r}"
        if not NAME_PATTERN.match(name) or name in model_ids:
            raise ValueError(f"{where}: names must be 1-64 characters from [A-Za-z0-9_.-] and not a model id")
        if not isinstance(body, dict):
            raise ValueError(f"{where}: must be an object with model, steer, probes")
        unknown = sorted(set(body) - PRESET_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}")
        model = body.get("model", "default")
        if model not in model_ids:
            raise ValueError(f"{where}: model {model!r} is not the served model ({', '.join(model_ids)})")
        steer, probes = body.get("steer"), body.get("probes")
        if steer is not None and not isinstance(steer, (dict, list)):
            raise ValueError(f"{where}: steer must be an object or a list, as in a request")
        if probes is not None and not (probes == "all" or isinstance(probes, (list, dict))):
            raise ValueError(f"{where}: probes must be a list, \"all\" or an object, as in a request")
        guard = body.get("guard")
        if guard is not None and not isinstance(guard, list):
            raise ValueError(f"{where}: guard must be a list of rules, as in a request")
        presets[name] = Preset(name, model, steer, probes, str(body.get("description", "")), guard)
    return presets
