"""The `steer` body field and the `X-Steer` header, turned into interventions per choice.

Body, shorthand:  {"green_red": 1.5}
Body, full:       [{"vector": "green_red", "alpha": 1.5, "op": "add", "layers": "8-16", "scope": "generation"}]
Header:           X-Steer: green_red=1.5, calm=-0.5      (a bare name uses the vector's default alpha)

With n > 1 an alpha may be a list of n numbers: choice i gets alpha[i].

alpha's unit (api.md section 3): for add, the total shift across the steered
layers in class-mean differences (imported control vectors: per layer, their
metadata's alpha_unit says which); for reflect and ablate, a fraction of the
component. Each op has its own hard limit (gateway/limits.py): beyond it, 400.
A vector calibrated by `mlx-interp vectors calibrate` has a coherent range; an
add beyond it is applied and the echo carries a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlx_interp.steering.interventions import Intervention, Op, Scope

from .errors import BadRequest
from .limits import Limits

ENTRY_KEYS = {"vector", "alpha", "op", "layers", "scope", "value"}


@dataclass(frozen=True)
class SteerEntry:
    vector: str
    alpha: float | tuple[float, ...] | None = None  # None: the vector's default
    op: str = "add"
    layers: object = None  # None: recommended layers
    scope: str = "all"
    value: float | None = None
    source: str = "steer"  # the param named in errors: "steer" or the header


@dataclass
class SteerPlan:
    per_choice: list[tuple[Intervention, ...]]  # one tuple per choice
    applied: list[dict]  # what the response echoes under "steering.applied"


# op -> the Limits field bounding |alpha| (clamp's and cap's alpha is unused: their value is bounded instead)
ALPHA_LIMIT_FIELD = {"add": "max_alpha", "reflect": "max_reflect_alpha", "ablate": "max_ablate_alpha", "clamp": "max_alpha",
                     "cap": "max_alpha"}


def _number(value, where: str, limits: Limits, param: str, what: str = "alpha", op: str = "add") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{where}: {what} must be a finite number, got {value!r}", param=param)
    name = "max_clamp_value" if what == "value" else ALPHA_LIMIT_FIELD[op]
    bound = getattr(limits, name)
    if abs(value) > bound:
        label = f"{what} of {op}" if what == "alpha" else what
        raise BadRequest(
            f"{where}: |{label}| must be at most {bound:g} (--{name.replace('_', '-')}), got {value!r}", param=param
        )
    return float(value)


def _alpha(value, where: str, n: int, limits: Limits, param: str, op: str = "add"):
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != n:
            raise BadRequest(f"{where}: an alpha list needs one value per choice (n={n}), got {len(value)}", param=param)
        return tuple(_number(v, where, limits, param, op=op) for v in value)
    return _number(value, where, limits, param, op=op)


def parse_body(steer, n: int, limits: Limits) -> list[SteerEntry]:
    if steer is None:
        return []
    if isinstance(steer, dict):
        entries = []
        for name, alpha in steer.items():
            entries.append(SteerEntry(vector=name, alpha=_alpha(alpha, f"steer.{name}", n, limits, "steer")))
        return entries
    if isinstance(steer, list):
        entries = []
        for i, item in enumerate(steer):
            where = f"steer[{i}]"
            if not isinstance(item, dict):
                raise BadRequest(f"{where} must be an object like {{\"vector\": NAME, \"alpha\": 1.5}}", param="steer")
            unknown = sorted(set(item) - ENTRY_KEYS)
            if unknown:
                raise BadRequest(f"{where} has unknown field {unknown[0]!r}; allowed: {', '.join(sorted(ENTRY_KEYS))}", param="steer")
            name = item.get("vector")
            if not isinstance(name, str):
                raise BadRequest(f"{where}.vector must be a vector name (string), got {name!r}", param="steer")
            op = item.get("op", "add")
            if op not in {o.value for o in Op}:
                raise BadRequest(f"{where}.op must be one of add, reflect, ablate, clamp, cap; got {op!r}", param="steer")
            scope = item.get("scope", "all")
            if scope not in {s.value for s in Scope}:
                raise BadRequest(f"{where}.scope must be one of all, prompt, generation; got {scope!r}", param="steer")
            value = item.get("value")
            if op in ("clamp", "cap"):
                if value is None:
                    what = "the projection to set" if op == "clamp" else "the largest projection allowed"
                    raise BadRequest(f"{where}: op {op!r} needs a value ({what})", param="steer")
                value = _number(value, where, limits, "steer", "value", op)
            elif value is not None:
                raise BadRequest(f"{where}.value is only used with op 'clamp' or 'cap'", param="steer")
            layers = item.get("layers")
            if layers is not None and not isinstance(layers, (str, list, int)) or isinstance(layers, bool):
                raise BadRequest(f"{where}.layers must be a list of ints, a range like '8-16' or 'all'", param="steer")
            entries.append(
                SteerEntry(name, _alpha(item.get("alpha"), where, n, limits, "steer", op), op, layers, scope, value)
            )
        return entries
    raise BadRequest(f"steer must be an object {{name: alpha}} or a list of entries, not {type(steer).__name__}", param="steer")


def parse_header(header: str | None, limits: Limits) -> list[SteerEntry]:
    if header is None:
        return []
    if len(header) > limits.max_header_chars:
        raise BadRequest(f"X-Steer header is {len(header)} characters; the limit is {limits.max_header_chars}", param="X-Steer")
    entries = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        alpha = None
        if sep:
            try:
                alpha = float(value.strip())
            except ValueError:
                raise BadRequest(f"X-Steer: alpha for {name!r} must be a number, got {value.strip()!r}", param="X-Steer") from None
            alpha = _number(alpha, f"X-Steer {name}", limits, "X-Steer")
        if not name:
            raise BadRequest(f"X-Steer entry {part!r} has no vector name; use NAME=ALPHA", param="X-Steer")
        entries.append(SteerEntry(vector=name, alpha=alpha, source="X-Steer"))
    return entries


def range_warnings(vector, op: str, alphas) -> list[str]:
    """Warnings for add alphas beyond the vector's calibrated coherent range (applied anyway)."""
    span = vector.coherent_range if op == "add" else None
    if span is None:
        return []
    low, high = span
    return [
        f"alpha {a:g} is beyond {vector.name}'s coherent range [{low:g}, {high:g}] (measured by calibration): "
        "applied anyway, expect broken text"
        for a in alphas
        if a < low or a > high
    ]


def build_plan(entries: list[SteerEntry], n: int, vectors, limits: Limits) -> SteerPlan:
    """Look vectors up and build the interventions of each choice; 400 naming the entry on any problem."""
    if len(entries) > limits.max_steer:
        raise BadRequest(f"steer has {len(entries)} entries; the limit is {limits.max_steer} (--max-steer)", param="steer")
    per_choice: list[list[Intervention]] = [[] for _ in range(n)]
    applied = []
    for e in entries:
        param = "steer" if e.source == "steer" else e.source
        try:
            vector = vectors.get(e.vector)
        except KeyError:
            known = ", ".join(vectors.names()[:20]) or "none loaded"
            where = "" if e.source == "steer" else f" in {e.source}"
            # api.md section 7: an unknown vector is param "steer" whichever form named it.
            raise BadRequest(f"unknown steering vector {e.vector[:80]!r}{where} (loaded: {known})", param="steer", code="unknown_vector") from None
        alphas = e.alpha if isinstance(e.alpha, tuple) else (e.alpha,) * n
        made = []
        for i, alpha in enumerate(alphas):
            try:
                iv = vector.intervention(alpha=alpha, op=e.op, layers=e.layers, scope=e.scope, value=e.value)
            except ValueError as exc:
                raise BadRequest(f"steer {e.vector!r}: {exc}", param=param) from None
            per_choice[i].append(iv)
            made.append(iv)
        listed = isinstance(e.alpha, tuple)
        applied.append(
            {
                "vector": vector.name,
                "alpha": [m.alpha for m in made] if listed else made[0].alpha,
                "op": iv.op.value,
                "layers": list(iv.layers),
                "scope": iv.scope.value,
                "sha256": vector.sha256,
                "per_layer_alpha": [round(m.per_layer_alpha, 6) for m in made] if listed else round(made[0].per_layer_alpha, 6),
                "alpha_unit": iv.alpha_unit.value,
                **({"value": iv.value} if iv.value is not None else {}),
                "warnings": range_warnings(vector, iv.op.value, sorted({m.alpha for m in made})),
            }
        )
    return SteerPlan([tuple(c) for c in per_choice], applied)
