"""The `probes` body field and the `X-Probes` header; the per-choice probe results of api.md section 4.

Body:   "probes": ["sycophancy"]  |  "all"  |  {"sycophancy": {"per_token": true, "threshold": 0.8}}
Header: X-Probes: sycophancy, emotion      (or "all")

A reading is a (num_probes, num_layers) array of probabilities for one token
position, NaN where a probe has no weights at a layer. A token's reading is
the residual stream after the model has read that token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import BadRequest
from .limits import Limits
from .protocol import ProbeRequest  # noqa: F401  (defined with the other wire shapes; imported from here too)

OPTION_KEYS = {"per_token", "threshold"}


def _options(name: str, opts) -> tuple[bool, float | None]:
    if opts is None or opts is True:
        return False, None
    if not isinstance(opts, dict):
        raise BadRequest(f"probes.{name} must be an object like {{\"per_token\": true, \"threshold\": 0.8}}", param="probes")
    unknown = sorted(set(opts) - OPTION_KEYS)
    if unknown:
        raise BadRequest(f"probes.{name} has unknown option {unknown[0]!r}; allowed: per_token, threshold", param="probes")
    per_token = opts.get("per_token", False)
    if not isinstance(per_token, bool):
        raise BadRequest(f"probes.{name}.per_token must be true or false, got {per_token!r}", param="probes")
    threshold = opts.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise BadRequest(f"probes.{name}.threshold must be a number in [0, 1], got {threshold!r}", param="probes")
        threshold = float(threshold)
    return per_token, threshold


def parse(body_value, header: str | None, probes, limits: Limits) -> tuple[ProbeRequest, ...]:
    """Requested probes, body first then header, each named once; 400 with param "probes" on problems."""
    wanted: dict[str, tuple[bool, float | None]] = {}
    if body_value is not None:
        if body_value == "all":
            wanted.update({n: (False, None) for n in probes.names()})
        elif isinstance(body_value, list):
            for i, name in enumerate(body_value):
                if not isinstance(name, str):
                    raise BadRequest(f"probes[{i}] must be a probe name (string), got {name!r}", param="probes")
                wanted[name] = (False, None)
        elif isinstance(body_value, dict):
            for name, opts in body_value.items():
                wanted[name] = _options(name, opts)
        else:
            raise BadRequest("probes must be a list of names, \"all\", or an object {name: options}", param="probes")
    if header is not None:
        if len(header) > limits.max_header_chars:
            raise BadRequest(f"X-Probes header is {len(header)} characters; the limit is {limits.max_header_chars}", param="X-Probes")
        names = [p.strip() for p in header.split(",") if p.strip()]
        if names == ["all"]:
            names = probes.names()
        for name in names:
            wanted.setdefault(name, (False, None))
    if len(wanted) > limits.max_probes:
        raise BadRequest(f"{len(wanted)} probes requested; the limit is {limits.max_probes} (--max-probes)", param="probes")
    out = []
    for name, (per_token, threshold) in wanted.items():
        try:
            probe = probes.get(name)
        except KeyError:
            known = ", ".join(probes.names()[:20]) or "none loaded"
            raise BadRequest(f"unknown probe {name[:80]!r} (loaded: {known})", param="probes", code="unknown_probe") from None
        out.append(ProbeRequest(probe, per_token, threshold))
    return tuple(out)


def _finite(x) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _aggregate(values: np.ndarray, how: str, axis=0):
    """Aggregate readings over tokens (axis 0); NaN stays NaN."""
    if how == "max":
        return values.max(axis=axis)
    if how == "last":
        return values[-1]
    return values.mean(axis=axis)


@dataclass
class ProbeReadings:
    """Collects one choice's readings and turns them into the response's "probes" object."""

    requests: tuple[ProbeRequest, ...]
    prompt: np.ndarray | None = None  # (P, L) at the last prompt token
    tokens: list = field(default_factory=list)  # (P, L) per scored token (echoed prompt tokens, then generated)

    def best(self, reading: np.ndarray) -> dict:
        """{name: {"score": x}} at each probe's best layer: what a stream chunk carries."""
        return {r.name: {"score": _finite(reading[j, r.probe.best_layer])} for j, r in enumerate(self.requests)}

    def result(self) -> dict:
        out = {}
        stacked = np.stack(self.tokens) if self.tokens else None  # (T, P, L)
        for j, r in enumerate(self.requests):
            p = r.probe
            if stacked is not None:
                per_layer = _aggregate(stacked[:, j, :], p.aggregation)
            else:
                per_layer = self.prompt[j] if self.prompt is not None else np.full(1, np.nan)
            score = _finite(per_layer[p.best_layer]) if per_layer.shape[0] > p.best_layer else None
            threshold = r.effective_threshold
            item = {
                "score": score,
                "layer": p.best_layer,
                "aggregate": p.aggregation,
                "per_layer": [_finite(v) for v in per_layer],
                "prompt_score": _finite(self.prompt[j, p.best_layer]) if self.prompt is not None else None,
                "threshold": threshold,
                "flagged": bool(score is not None and score >= threshold),
            }
            if r.per_token:
                item["per_token"] = [_finite(t[j, p.best_layer]) for t in self.tokens]
            out[r.name] = item
        return out
