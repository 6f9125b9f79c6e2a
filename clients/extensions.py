"""Request side: typed steering and probe requests, turned into what the `openai` client sends.

The server reads two extension fields, `steer` and `probes` (or the headers
`X-Steer` / `X-Probes` for clients that cannot add body fields). These helpers
build them from dataclasses so a user never writes the raw JSON by hand:

    client.chat.completions.create(..., extra_body=extension_body(
        steer=[Steer("green_red", 1.5)], probes=[ProbeRequest("sycophancy", per_token=True)]))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Union

OPS = ("add", "reflect", "ablate", "clamp", "cap")
GUARD_ACTIONS = ("stop", "steer", "cap")
SCOPES = ("all", "prompt", "generation")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

Layers = Union[None, str, Sequence[int]]
Alpha = Union[float, Sequence[float]]


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"{what} name {name!r} is not valid; use 1-64 characters from [A-Za-z0-9_.-]")
    return name


def _check_number(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class Steer:
    """One steering entry: apply `vector` with strength `alpha` using `op`.

    `layers`: None (the vector's recommended layers), "all", a range "8-16" or a
    list of layer indices. `alpha` may be a list with one value per choice when n > 1.
    `value` is the target projection for op="clamp" (the largest one allowed for op="cap").
    """

    vector: str
    alpha: Alpha = 1.0
    op: str = "add"
    layers: Layers = None
    scope: str = "all"
    value: float | None = None

    def __post_init__(self):
        _check_name(self.vector, "vector")
        if self.op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, got {self.op!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if isinstance(self.alpha, (list, tuple)):
            [_check_number(a, "alpha") for a in self.alpha]
        else:
            _check_number(self.alpha, "alpha")
        if self.op == "clamp" and self.value is None:
            raise ValueError("op 'clamp' needs a value (the projection to clamp to)")

    def to_json(self) -> dict:
        alpha = [float(a) for a in self.alpha] if isinstance(self.alpha, (list, tuple)) else float(self.alpha)
        entry: dict = {"vector": self.vector, "alpha": alpha, "op": self.op, "scope": self.scope}
        if self.layers is not None:
            entry["layers"] = self.layers if isinstance(self.layers, str) else [int(x) for x in self.layers]
        if self.value is not None:
            entry["value"] = _check_number(self.value, "value")
        return entry

    @property
    def is_shorthand(self) -> bool:
        """True when the header form `name=alpha` says everything this entry says."""
        return (
            self.op == "add"
            and self.scope == "all"
            and self.layers is None
            and self.value is None
            and not isinstance(self.alpha, (list, tuple))
        )


@dataclass(frozen=True)
class ProbeRequest:
    """Ask for one probe's scores; `per_token` adds a score per generated token."""

    name: str
    per_token: bool = False
    threshold: float | None = None

    def __post_init__(self):
        _check_name(self.name, "probe")
        if self.threshold is not None:
            t = _check_number(self.threshold, "threshold")
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")

    def options(self) -> dict:
        out: dict = {"per_token": bool(self.per_token)}
        if self.threshold is not None:
            out["threshold"] = float(self.threshold)
        return out


@dataclass(frozen=True)
class ServerGuard:
    """A guard rule the server runs inside its decode loop (api.md section 4b).

    It holds when `probe` scores at or above `above` for `for_tokens` tokens in a
    row; then `then` happens: "stop" ends the reply (finish_reason
    "content_filter"), "steer" applies `steer` from the next token on, "cap" caps
    the projection on `vector` at `max` while the rule holds.
    """

    probe: str
    above: float
    then: str = "stop"
    for_tokens: int = 1
    steer: "SteerLike | None" = None
    vector: str | None = None
    max: float | None = None
    layers: Layers = None

    def __post_init__(self):
        _check_name(self.probe, "probe")
        above = _check_number(self.above, "above")
        if not 0.0 <= above <= 1.0:
            raise ValueError(f"above must be a probability in [0, 1], got {self.above!r}")
        if isinstance(self.for_tokens, bool) or not isinstance(self.for_tokens, int) or self.for_tokens < 1:
            raise ValueError(f"for_tokens must be a whole number >= 1, got {self.for_tokens!r}")
        if self.then not in GUARD_ACTIONS:
            raise ValueError(f"then must be one of {', '.join(GUARD_ACTIONS)}, got {self.then!r}")
        if (self.then == "steer") != (self.steer is not None):
            raise ValueError("steer goes with then='steer' (and only with it)")
        if (self.then == "cap") != (self.vector is not None and self.max is not None):
            raise ValueError("vector and max go with then='cap' (and only with it)")
        if self.vector is not None:
            _check_name(self.vector, "vector")
            _check_number(self.max, "max")

    def to_json(self) -> dict:
        out: dict = {"probe": self.probe, "above": float(self.above), "for_tokens": self.for_tokens, "then": self.then}
        if self.then == "steer":
            out["steer"] = steer_json(self.steer)
        if self.then == "cap":
            out.update(vector=self.vector, max=float(self.max))
            if self.layers is not None:
                out["layers"] = self.layers if isinstance(self.layers, str) else list(self.layers)
        return out

    def describe(self) -> str:
        run = f" for {self.for_tokens} tokens" if self.for_tokens > 1 else ""
        return f"server guard: {self.probe} >= {self.above:g}{run} -> {self.then}"


def guard_json(guards: "Iterable[ServerGuard]") -> list[dict]:
    """The `guard` body field for these rules."""
    return [g.to_json() for g in guards]


SteerLike = Union[Steer, Mapping[str, float], Iterable[Steer]]
ProbesLike = Union[str, ProbeRequest, Iterable[Union[str, ProbeRequest]]]


def _as_steers(steer: SteerLike) -> list[Steer]:
    if isinstance(steer, Steer):
        return [steer]
    if isinstance(steer, Mapping):
        return [Steer(name, alpha) for name, alpha in steer.items()]
    return [s if isinstance(s, Steer) else Steer(**s) for s in steer]


def _as_probes(probes: ProbesLike) -> list[ProbeRequest] | str:
    if probes == "all":
        return "all"
    if isinstance(probes, (str, ProbeRequest)):
        probes = [probes]
    return [p if isinstance(p, ProbeRequest) else ProbeRequest(p) for p in probes]


def steer_json(steer: SteerLike) -> list[dict]:
    """The JSON value of the `steer` body field."""
    return [s.to_json() for s in _as_steers(steer)]


def probes_json(probes: ProbesLike) -> str | list[str] | dict:
    """The JSON value of the `probes` body field: "all", a list of names, or per-probe options."""
    parsed = _as_probes(probes)
    if parsed == "all":
        return "all"
    if all(p.options() == {"per_token": False} for p in parsed):
        return [p.name for p in parsed]
    return {p.name: p.options() for p in parsed}


def steer_body(steer: SteerLike) -> dict:
    """`extra_body` carrying steering: `create(..., extra_body=steer_body([Steer("green_red", 1.5)]))`."""
    return {"steer": steer_json(steer)}


def probes_body(probes: ProbesLike) -> dict:
    """`extra_body` asking for probe scores."""
    return {"probes": probes_json(probes)}


def extension_body(steer: SteerLike | None = None, probes: ProbesLike | None = None) -> dict:
    """`extra_body` with both extension fields (either may be left out)."""
    body: dict = {}
    if steer:
        body.update(steer_body(steer))
    if probes:
        body.update(probes_body(probes))
    return body


def _format_alpha(alpha: float) -> str:
    return repr(float(alpha)) if not float(alpha).is_integer() else str(int(alpha))


def steer_header(steer: SteerLike) -> dict:
    """`extra_headers` carrying steering as `X-Steer: green_red=1.5, calm=-0.5`.

    The header only has the shorthand (op add, the vector's layers, scope all);
    anything more needs the body form, so this refuses it instead of dropping it.
    """
    steers = _as_steers(steer)
    for s in steers:
        if not s.is_shorthand:
            raise ValueError(f"steer entry for {s.vector!r} needs the body form (steer_body); the header only carries name=alpha")
    return {"X-Steer": ", ".join(f"{s.vector}={_format_alpha(s.alpha)}" for s in steers)}


def probes_header(probes: ProbesLike) -> dict:
    """`extra_headers` asking for probes as `X-Probes: sycophancy, emotion`."""
    parsed = _as_probes(probes)
    if parsed == "all":
        return {"X-Probes": "all"}
    for p in parsed:
        if p.options() != {"per_token": False}:
            raise ValueError(f"probe options for {p.name!r} need the body form (probes_body); the header only carries names")
    return {"X-Probes": ", ".join(p.name for p in parsed)}


def parse_steer_text(text: str) -> list[Steer]:
    """Read the shorthand `green_red=1.5, calm=-0.5` (or `green_red 1.5`) into entries."""
    steers = []
    for part in re.split(r"[,;]", text):
        part = part.strip()
        if not part:
            continue
        name, sep, alpha = part.replace("=", " ").partition(" ")
        if not sep or not alpha.strip():
            raise ValueError(f"expected NAME=ALPHA, got {part!r}")
        try:
            value = float(alpha)
        except ValueError:
            raise ValueError(f"alpha for {name!r} must be a number, got {alpha.strip()!r}") from None
        steers.append(Steer(name, value))
    return steers
