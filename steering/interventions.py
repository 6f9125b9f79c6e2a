"""Interventions on the residual stream, compiled per batch so every row can have its own.

For a direction v at layer l (u = v/|v|, p = h·u the projection of hidden state h):
    add      h + alpha·v                  (negative alpha subtracts)
    ablate   h - alpha·p·u                (alpha=1 removes the component entirely)
    reflect  h - 2·alpha·(p - m)·u        (alpha=1 mirrors p about the midpoint m, default 0)
    clamp    h + (value - p)·u            (sets the projection to value)

The three projection operations share one form, h + (a·p + b)·u, with per-row
coefficients a and b. A row without an intervention gets a = b = 0 (or a zero
add), and h + 0 is exactly h, so unsteered rows compute exactly what an
unhooked model computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import mlx.core as mx


class Op(str, Enum):
    ADD = "add"
    REFLECT = "reflect"
    ABLATE = "ablate"
    CLAMP = "clamp"


class Scope(str, Enum):
    ALL = "all"
    PROMPT = "prompt"
    GENERATION = "generation"


class Phase(str, Enum):
    """What a row is processing in this forward pass: its prompt, or tokens it generated."""

    PROMPT = "prompt"
    GENERATION = "generation"


@dataclass(frozen=True, eq=False)
class Intervention:
    """One operation with one direction, on a set of layers, in a scope.

    `directions` is (num_layers, hidden) float32; rows of layers the vector has
    no direction for are ignored because they are not in `layers`.
    """

    name: str
    directions: np.ndarray
    op: Op = Op.ADD
    alpha: float = 1.0
    layers: tuple[int, ...] = ()
    scope: Scope = Scope.ALL
    value: float | None = None  # clamp target
    midpoints: np.ndarray | None = None  # (num_layers,) projection to reflect about
    key: str = ""  # identity of the direction (e.g. its sha256); defaults to the name

    def __post_init__(self):
        object.__setattr__(self, "op", Op(self.op))
        object.__setattr__(self, "scope", Scope(self.scope))
        if self.op is Op.CLAMP and self.value is None:
            raise ValueError(f"clamp on {self.name!r} needs a value")
        if not self.layers:
            object.__setattr__(self, "layers", tuple(range(self.directions.shape[0])))
        if not self.key:
            object.__setattr__(self, "key", self.name)
        bad = [l for l in self.layers if not 0 <= l < self.directions.shape[0]]
        if bad:
            raise ValueError(f"layers {bad} out of range for {self.name!r} ({self.directions.shape[0]} layers)")

    def active_in(self, phase: Phase) -> bool:
        return self.scope is Scope.ALL or self.scope.value == phase.value


@dataclass
class _AddTerm:
    delta: mx.array  # (B, 1, D): sum of alpha·v over rows' add interventions
    _cast: dict = field(default_factory=dict)  # dtype -> delta in that dtype, made once

    def delta_as(self, dtype):
        """The delta in the hidden state's dtype, so a float16 model's residual stays float16."""
        if dtype == self.delta.dtype:
            return self.delta
        if dtype not in self._cast:
            self._cast[dtype] = self.delta.astype(dtype)
        return self._cast[dtype]


@dataclass
class _ProjTerm:
    unit: mx.array  # (D,) float32
    a: mx.array  # (B, 1, 1)
    b: mx.array  # (B, 1, 1)


@dataclass
class RowSteering:
    """Per-layer terms for one batch composition; build once, apply every step while rows stay the same."""

    batch_size: int
    terms: dict[int, list] = field(default_factory=dict)

    @classmethod
    def build(cls, rows: Sequence[Sequence[Intervention]], phases: Sequence[Phase] | Phase, dtype=None) -> "RowSteering | None":
        """Compile rows' interventions for this forward pass; None when no row is steered in it."""
        import mlx.core as mx

        B = len(rows)
        if isinstance(phases, Phase):
            phases = [phases] * B
        active = [[iv for iv in row if iv.active_in(ph)] for row, ph in zip(rows, phases)]
        if not any(active):
            return None
        # Each layer gets a sequence of stages: one add (a delta per row) or one projection
        # op on one direction (coefficients per row). A row's interventions land in stages in
        # the row's own order, and a row skips stages that are not its own (zero delta, zero
        # coefficients), so what a row gets never depends on its neighbours in the batch.
        # A row's consecutive adds share a stage (they commute); a direction used by several
        # rows costs one stage.
        stages: dict[int, list[list]] = {}  # layer -> [[kind, payload...]]
        latest: dict[tuple[int, int], int] = {}  # (row, layer) -> the row's last stage there
        for r, row in enumerate(active):
            for iv in row:
                for layer in iv.layers:
                    v = iv.directions[layer].astype(np.float32)
                    seq = stages.setdefault(layer, [])
                    prev = latest.get((r, layer), -1)
                    kind = "add" if iv.op is Op.ADD else ("proj", iv.key)
                    start = prev if kind == "add" and prev >= 0 and seq[prev][0] == "add" else prev + 1
                    j = next((i for i in range(start, len(seq)) if seq[i][0] == kind), None)
                    if j is None:
                        if kind == "add":
                            seq.append([kind, np.zeros((B, v.shape[0]), np.float32)])
                        else:
                            norm = float(np.linalg.norm(v))
                            seq.append([kind, v / norm if norm > 0 else v, np.zeros(B, np.float32), np.zeros(B, np.float32)])
                        j = len(seq) - 1
                    latest[(r, layer)] = j
                    stage = seq[j]
                    if iv.op is Op.ADD:
                        stage[1][r] += iv.alpha * v
                    elif iv.op is Op.ABLATE:
                        stage[2][r], stage[3][r] = -iv.alpha, 0.0
                    elif iv.op is Op.REFLECT:
                        m = float(iv.midpoints[layer]) if iv.midpoints is not None else 0.0
                        stage[2][r], stage[3][r] = -2.0 * iv.alpha, 2.0 * iv.alpha * m
                    else:  # clamp
                        stage[2][r], stage[3][r] = -1.0, float(iv.value)
        out = cls(batch_size=B)
        target = dtype or mx.float32
        for layer, seq in stages.items():
            for stage in seq:
                if stage[0] == "add":
                    term = _AddTerm(mx.array(stage[1][:, None, :]).astype(target))
                else:
                    _, unit, a, b = stage
                    term = _ProjTerm(mx.array(unit), mx.array(a[:, None, None]), mx.array(b[:, None, None]))
                out.terms.setdefault(layer, []).append(term)
        return out

    def apply(self, layer: int, h):
        terms = self.terms.get(layer)
        if not terms:
            return h
        if h.shape[0] != self.batch_size:
            raise ValueError(f"steering was built for {self.batch_size} rows but the batch has {h.shape[0]}")
        for term in terms:
            if isinstance(term, _AddTerm):
                h = h + term.delta_as(h.dtype)
            else:
                h32 = h.astype(term.unit.dtype)
                p = (h32 @ term.unit)[..., None]
                h = (h32 + (term.a * p + term.b) * term.unit).astype(h.dtype)
        return h
