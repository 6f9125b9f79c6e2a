"""The `probes` body field and the `X-Probes` header; the per-choice probe results of api.md section 4.

Body:   "probes": ["sycophancy"]  |  "all"  |  {"sycophancy": {"per_token": true, "threshold": 0.8}}
Header: X-Probes: sycophancy, emotion      (or "all")

A reading is a (num_probes, num_layers) array of probabilities for one token
position, NaN where a probe has no weights at a layer. A token's reading is
the residual stream after the model has read that token.

Each probe is read where it was trained (probes.positions): a `token` probe
at every token (its score is the response aggregate, per_token on request),
a `prompt_last` probe at the last prompt token, an `answer_end` probe at the
last token of the answer (the last prompt token when nothing was generated).
Asking for a reading a probe was not trained for (per_token of a non-token
probe, or a different "position") is a 400 naming the positions it supports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mlx_interp.probes.aggregation import aggregate
from mlx_interp.probes.positions import ANSWER_END

from .errors import BadRequest
from .limits import Limits
from .protocol import ProbeRequest  # noqa: F401  (defined with the other wire shapes; imported from here too)

OPTION_KEYS = {"per_token", "threshold", "position"}


def _options(name: str, opts) -> tuple[bool, float | None, str | None]:
    if opts is None or opts is True:
        return False, None, None
    if not isinstance(opts, dict):
        raise BadRequest(f"probes.{name} must be an object like {{\"per_token\": true, \"threshold\": 0.8}}", param="probes")
    unknown = sorted(set(opts) - OPTION_KEYS)
    if unknown:
        raise BadRequest(f"probes.{name} has unknown option {unknown[0]!r}; allowed: per_token, threshold, position", param="probes")
    per_token = opts.get("per_token", False)
    if not isinstance(per_token, bool):
        raise BadRequest(f"probes.{name}.per_token must be true or false, got {per_token!r}", param="probes")
    threshold = opts.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise BadRequest(f"probes.{name}.threshold must be a number in [0, 1], got {threshold!r}", param="probes")
        threshold = float(threshold)
    position = opts.get("position")
    if position is not None and not isinstance(position, str):
        raise BadRequest(f"probes.{name}.position must be a string, got {position!r}", param="probes")
    return per_token, threshold, position


def _check_position(probe, per_token: bool, position: str | None) -> None:
    """400 unless the probe was trained to be read the way the request asks."""
    trained = probe.position
    if position is not None and position != trained:
        raise BadRequest(
            f"probe {probe.name!r} was trained at position {trained!r} and supports only that position "
            f"(requested {position[:40]!r})",
            param="probes",
            code="unsupported_probe_position",
        )
    if per_token and not probe.per_token:
        raise BadRequest(
            f"probe {probe.name!r} was trained at position {trained!r}, so it has no per-token reading; "
            f"per_token needs a probe trained at 'token' (this one supports: {trained})",
            param="probes",
            code="unsupported_probe_position",
        )


def parse(body_value, header: str | None, probes, limits: Limits) -> tuple[ProbeRequest, ...]:
    """Requested probes, body first then header, each named once; 400 with param "probes" on problems."""
    wanted: dict[str, tuple[bool, float | None, str | None]] = {}
    if body_value is not None:
        if body_value == "all":
            wanted.update({n: (False, None, None) for n in probes.names()})
        elif isinstance(body_value, list):
            for i, name in enumerate(body_value):
                if not isinstance(name, str):
                    raise BadRequest(f"probes[{i}] must be a probe name (string), got {name!r}", param="probes")
                wanted[name] = (False, None, None)
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
            wanted.setdefault(name, (False, None, None))
    if len(wanted) > limits.max_probes:
        raise BadRequest(f"{len(wanted)} probes requested; the limit is {limits.max_probes} (--max-probes)", param="probes")
    out = []
    for name, (per_token, threshold, position) in wanted.items():
        try:
            probe = probes.get(name)
        except KeyError:
            known = ", ".join(probes.names()[:20]) or "none loaded"
            raise BadRequest(f"unknown probe {name[:80]!r} (loaded: {known})", param="probes", code="unknown_probe") from None
        _check_position(probe, per_token, position)
        out.append(ProbeRequest(probe, per_token, threshold))
    return tuple(out)


def _finite(x) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


@dataclass
class ProbeReadings:
    """Collects one choice's readings and turns them into the response's "probes" object."""

    requests: tuple[ProbeRequest, ...]
    prompt: np.ndarray | None = None  # (P, L) at the last prompt token
    tokens: list = field(default_factory=list)  # (P, L) per scored token (echoed prompt tokens, then generated)

    def best(self, reading: np.ndarray) -> dict:
        """{name: {"score": x}} at each token probe's best layer: what a stream chunk carries.

        Only probes trained per token have a per-token reading; the others
        appear in the final chunk's aggregates. A probe asked for per_token also
        gets the token's reading at every layer (`per_layer`, null where it has
        no weights): the playground draws it.
        """
        out = {}
        for j, r in enumerate(self.requests):
            if not r.probe.per_token:
                continue
            item = {"score": _finite(reading[j, r.probe.best_layer])}
            if r.per_token:
                item["per_layer"] = [_finite(v) for v in reading[j]]
            out[r.name] = item
        return out

    def _per_layer(self, j: int, probe) -> np.ndarray:
        """The probe's reading at every layer, taken where it was trained to read."""
        empty = np.full(1, np.nan)
        if probe.per_token and self.tokens:
            stacked = np.stack([t[j] for t in self.tokens])  # (T, L)
            return aggregate(stacked, probe.aggregation, probe.ema_window)
        if probe.position == ANSWER_END and self.tokens:
            return self.tokens[-1][j]
        return self.prompt[j] if self.prompt is not None else empty

    def result(self) -> dict:
        out = {}
        for j, r in enumerate(self.requests):
            p = r.probe
            per_layer = self._per_layer(j, p)
            score = _finite(per_layer[p.best_layer]) if per_layer.shape[0] > p.best_layer else None
            threshold = r.effective_threshold
            item = {
                "score": score,
                "layer": p.best_layer,
                "position": p.position,
                "aggregate": p.aggregation if p.per_token else None,
                "per_layer": [_finite(v) for v in per_layer],
                "prompt_score": _finite(self.prompt[j, p.best_layer]) if self.prompt is not None else None,
                "threshold": threshold,
                "flagged": bool(score is not None and score >= threshold),
            }
            if p.per_token:
                item["token_threshold"] = p.token_threshold
            if r.per_token:
                item["per_token"] = [_finite(t[j, p.best_layer]) for t in self.tokens]
            out[r.name] = item
        return out
