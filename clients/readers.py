"""Response side: read the server's extension fields into typed values.

The `openai` client keeps fields it does not know in `model_extra` of its
pydantic objects: `choices[i].probes` and the top-level `steering`. These
readers accept those objects (a whole response or chunk, or one choice) and
plain dicts alike, so they work on recorded JSON too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

# keys that only appear in a probe's aggregate result (the response or the final stream chunk)
# Keys only a whole-choice result has. Not per_layer: a streamed token's reading carries its
# per-layer curve too when per_token was asked for (the playground draws it).
AGGREGATE_KEYS = ("aggregate", "per_token", "prompt_score", "threshold", "flagged", "layer")


def extra_field(obj: Any, name: str) -> Any:
    """A field of a dict, or of an openai pydantic object (declared or in model_extra)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    extra = getattr(obj, "model_extra", None) or {}
    if name in extra:
        return extra[name]
    return getattr(obj, name, None)


def _choice(obj: Any, index: int) -> Any:
    """The choice with this index if obj is a response or chunk; obj itself if it is a choice."""
    choices = extra_field(obj, "choices")
    if choices is None:
        return obj
    for choice in choices:
        if extra_field(choice, "index") == index:
            return choice
    return None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _numbers(values: Any) -> list[float | None] | None:
    if values is None:
        return None
    return [_number(v) for v in values]


@dataclass(frozen=True)
class ProbeResult:
    """One probe's reading for a choice (or, in a stream chunk, for one token)."""

    name: str
    score: float | None
    layer: int | None = None
    aggregate: str | None = None
    per_layer: list[float | None] | None = None
    per_token: list[float | None] | None = None
    prompt_score: float | None = None
    threshold: float | None = None
    flagged: bool | None = None
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_aggregate(self) -> bool:
        """True for a whole-choice result; False for a single token's score in a stream chunk."""
        return any(key in self.raw for key in AGGREGATE_KEYS)

    @classmethod
    def from_json(cls, name: str, data: Any) -> "ProbeResult":
        if not isinstance(data, dict):
            # tolerate a bare number (a token score written compactly)
            return cls(name=name, score=_number(data), raw={"score": data})
        layer = data.get("layer")
        flagged = data.get("flagged")
        return cls(
            name=name,
            score=_number(data.get("score")),
            layer=int(layer) if isinstance(layer, (int, float)) and not isinstance(layer, bool) else None,
            aggregate=data.get("aggregate"),
            per_layer=_numbers(data.get("per_layer")),
            per_token=_numbers(data.get("per_token")),
            prompt_score=_number(data.get("prompt_score")),
            threshold=_number(data.get("threshold")),
            flagged=bool(flagged) if flagged is not None else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class AppliedSteer:
    """One steering entry the server says it applied (echoed in `steering.applied`)."""

    vector: str
    alpha: float | list[float] | None
    op: str | None = None
    layers: list[int] | str | None = None
    scope: str | None = None
    sha256: str | None = None
    per_layer_alpha: float | list[float] | None = None  # the coefficient added at each steered layer
    warnings: list[str] = field(default_factory=list)  # e.g. alpha beyond the vector's coherent range

    @classmethod
    def from_json(cls, data: dict) -> "AppliedSteer":
        alpha = data.get("alpha")
        alpha = _numbers(alpha) if isinstance(alpha, list) else _number(alpha)
        per_layer = data.get("per_layer_alpha")
        per_layer = _numbers(per_layer) if isinstance(per_layer, list) else _number(per_layer)
        warnings = data.get("warnings")
        return cls(
            vector=str(data.get("vector")),
            alpha=alpha,
            op=data.get("op"),
            layers=data.get("layers"),
            scope=data.get("scope"),
            sha256=data.get("sha256"),
            per_layer_alpha=per_layer,
            warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [],
        )


def probe_scores(obj: Any, index: int = 0) -> dict[str, ProbeResult]:
    """Probe results of a choice: pass a response, a stream chunk, or a choice.

    Empty when the choice carries no probes (none asked, or a chunk without a token).
    """
    choice = _choice(obj, index)
    probes = extra_field(choice, "probes")
    if not isinstance(probes, dict):
        return {}
    return {name: ProbeResult.from_json(name, data) for name, data in probes.items()}


def steering_applied(response: Any) -> list[AppliedSteer]:
    """What steering the server applied to this response (or stream chunk); empty if none."""
    steering = extra_field(response, "steering")
    applied = extra_field(steering, "applied") if steering is not None else None
    if not isinstance(applied, list):
        return []
    return [AppliedSteer.from_json(entry) for entry in applied if isinstance(entry, dict)]


@dataclass(frozen=True)
class GuardFired:
    """A server guard rule that fired (api.md section 4b): which rule, on which token, what it did.

    `token_index` is None for a rule judged on the prompt (a prompt_last probe).
    """

    rule: int
    token_index: int | None
    score: float | None
    action: str

    @classmethod
    def from_json(cls, data: dict) -> "GuardFired":
        index = data.get("token_index")
        return cls(
            rule=int(data.get("rule", -1)),
            token_index=int(index) if isinstance(index, int) and not isinstance(index, bool) else None,
            score=_number(data.get("score")),
            action=str(data.get("action")),
        )


def guard_fired(obj: Any, index: int = 0) -> list[GuardFired]:
    """The guard rules that fired: in a whole response all of them, in a stream chunk those of that chunk."""
    choice = _choice(obj, index)
    guard = extra_field(choice, "guard") if choice is not None else None
    fired = extra_field(guard, "fired") if guard is not None else None
    if not isinstance(fired, list):
        return []
    return [GuardFired.from_json(f) for f in fired if isinstance(f, dict)]


def chunk_text(chunk: Any, index: int = 0) -> str:
    """The text a stream chunk adds to a chat choice (or a completions choice); "" if none."""
    choice = _choice(chunk, index)
    if choice is None:
        return ""
    delta = extra_field(choice, "delta")
    if delta is not None:
        return extra_field(delta, "content") or ""
    return extra_field(choice, "text") or ""


def finish_reason(chunk: Any, index: int = 0) -> str | None:
    choice = _choice(chunk, index)
    return extra_field(choice, "finish_reason") if choice is not None else None
