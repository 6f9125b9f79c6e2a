"""Interventions on the residual stream, compiled per batch so every row can have its own.

What alpha means (contract section 3). For a vector with class means (mean
difference or PCA, `AlphaUnit.TOTAL`), alpha is the total shift of the residual
stream across the steered layers, in units of the vector's own class-mean
difference. The server adds c·v_l at every steered layer l (v_l is that
layer's class-mean difference) with one per-layer coefficient

    c = alpha / Σ_l t(l, L)        (L the last steered layer)
    t(l, L) = Π_{j=l}^{L-1} cos(v_j, v_{j+1})     (t(L, L) = 1)

Each add is c class-mean differences of its own layer. The residual stream
carries a push forward block by block, and the concept's direction rotates a
little at each block (adjacent cosines 0.94-0.99 on green_red), so a push along
v_l reaches layer L as the part of it that survives each step's rotation: the
product of the adjacent cosines along the way, not the direct cosine of v_l
with v_L (which treats a slow rotation across 30 blocks as if it were one
jump). For one layer c = alpha; for k parallel directions c = alpha / k.
Measured on SmolLM2-135M with green_red at alpha 1.5 (bench/alpha_unit_check.py;
docs/steering.md), the shift at the last steered layer along its class-mean
difference: 1.50 for layer 17 alone, 1.49 for 12-17, 1.42 for 0-17, 1.67 for all
30 layers. The two rules tried before: direct cosine with v_L (1.32 for 0-17,
2.08 for all 30: layers 0-22 have cosine 0.2-0.3 with layer 29's direction, but
their push arrives through 20 small rotations, not one large one), and
projection on v_L (3.3 for all 30 layers).
Imported llama.cpp / repeng control vectors have no class means and keep
llama.cpp's meaning (`AlphaUnit.PER_LAYER`): c = alpha at every layer.

The projection operations act once over a range, not once per layer. With
u_l = v_l/|v_l|, h the block's output and x its input (w = h - x, the block's
own write), at the range's first layer they act on the stream, at its later
layers on the block's write along u_l:

              first layer (stream)               later layers (the block's write)
    ablate    p -> (1-alpha)·p                   w·u -> (1-alpha)·w·u
    reflect   p -> p - 2·alpha·(p - m_first)     w·u -> w·u - 2·alpha·(w·u - (m_l - m_prev))
    clamp     p -> value                         w·u -> 0
    cap       p -> min(p, value) at every layer of the range (activation capping: it only
              acts above its bound, so capping the stream at each layer holds the bound)

so reflect mirrors the concept once (alpha 1 maps the final projection p_L to
2·m_L - p_L when the directions are parallel and the blocks' writes do not
react) instead of six consecutive mirrors that undo each other; reflect twice
restores the unsteered stream; ablate and clamp hold the projection across the
range. Each projection op is one form, h + (a·(h·u) + c·(x·u) + b)·u, with
per-row coefficients a, c, b (c = 0 on the stream, c = -a on a write);
`cap` (h - relu(p - value)·u) has a term of its own with a per-row on/off
coefficient.
A row without an intervention gets zero coefficients (or a zero add), and
h + 0 is exactly h, so unsteered rows compute exactly what an unhooked model
computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np


class Op(str, Enum):
    ADD = "add"
    REFLECT = "reflect"
    ABLATE = "ablate"
    CLAMP = "clamp"
    CAP = "cap"


class Scope(str, Enum):
    ALL = "all"
    PROMPT = "prompt"
    GENERATION = "generation"


class AlphaUnit(str, Enum):
    """How an add's alpha turns into the per-layer coefficient (see the module docstring)."""

    TOTAL = "class_mean_total"  # total shift across the steered layers, in class-mean differences
    PER_LAYER = "per_layer"  # llama.cpp's meaning: alpha times the direction at every steered layer


# Below this summed transport the directions do not add up along v_L (they point elsewhere or
# cancel) and the derivation would divide by almost nothing: fall back to alpha / k.
MIN_ALIGNED_SHARE = 0.25


def transport_weights(directions: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """t(l, L) for each of `layers` (L = the last): the product of adjacent cosines from l up to L.

    The path runs through every layer from l to L that has a direction (a zero row, a layer the
    vector has no direction for, is stepped over), so a push at layer 3 of a 3,8,12 selection is
    carried through layers 4-11 as the model carries it.
    """
    layers = sorted(int(l) for l in layers)
    rows = directions[: layers[-1] + 1].astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    path = [j for j in range(layers[0], layers[-1] + 1) if norms[j] > 0]
    weight = {path[-1]: 1.0}
    for a, b in zip(reversed(path[:-1]), reversed(path[1:])):  # walk down from L: t(a) = cos(v_a, v_b)·t(b)
        weight[a] = float(rows[a] @ rows[b] / (norms[a] * norms[b])) * weight[b]
    return np.array([weight.get(l, 0.0) for l in layers])


def per_layer_coefficient(directions: np.ndarray, layers: Sequence[int], alpha: float, unit: "AlphaUnit") -> float:
    """The coefficient c added as c·v_l at each of `layers` for an add of `alpha` in `unit`."""
    unit = AlphaUnit(unit)
    if unit is AlphaUnit.PER_LAYER or len(layers) <= 1:
        return float(alpha)
    norms = np.linalg.norm(directions[list(layers)].astype(np.float64), axis=1)
    if np.any(norms <= 0):
        return float(alpha) / len(layers)
    aligned = float(np.sum(transport_weights(directions, layers)))
    if aligned < MIN_ALIGNED_SHARE:
        return float(alpha) / len(layers)
    return float(alpha) / aligned


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
    value: float | None = None  # clamp target; cap bound
    midpoints: np.ndarray | None = None  # (num_layers,) projection to reflect about
    key: str = ""  # identity of the direction (e.g. its sha256); defaults to the name
    alpha_unit: AlphaUnit = AlphaUnit.TOTAL  # what an add's alpha means
    per_layer_alpha: float = field(init=False)  # the coefficient actually used at each layer

    def __post_init__(self):
        object.__setattr__(self, "op", Op(self.op))
        object.__setattr__(self, "scope", Scope(self.scope))
        object.__setattr__(self, "alpha_unit", AlphaUnit(self.alpha_unit))
        if self.op is Op.CLAMP and self.value is None:
            raise ValueError(f"clamp on {self.name!r} needs a value")
        if self.op is Op.CAP and self.value is None:
            raise ValueError(f"cap on {self.name!r} needs a value (the largest projection allowed)")
        if not self.layers:
            object.__setattr__(self, "layers", tuple(range(self.directions.shape[0])))
        if not self.key:
            object.__setattr__(self, "key", self.name)
        bad = [l for l in self.layers if not 0 <= l < self.directions.shape[0]]
        if bad:
            raise ValueError(f"layers {bad} out of range for {self.name!r} ({self.directions.shape[0]} layers)")
        object.__setattr__(self, "layers", tuple(sorted(set(int(l) for l in self.layers))))
        if self.op is Op.ADD:
            coefficient = per_layer_coefficient(self.directions, self.layers, self.alpha, self.alpha_unit)
        else:  # a fraction of the component, applied once over the range
            coefficient = float(self.alpha)
        object.__setattr__(self, "per_layer_alpha", coefficient)

    def active_in(self, phase: Phase) -> bool:
        return self.scope is Scope.ALL or self.scope.value == phase.value


@dataclass
class _AddTerm:
    delta: object  # mx.array (B, 1, D): sum of alpha·v over rows' add interventions
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
    """h + (a·(h·u) + c·(x·u) + b)·u per row; c is None when no row reads the block input x."""

    unit: object  # mx.array (D,) float32
    a: object  # mx.array (B, 1, 1)
    c: object | None  # mx.array (B, 1, 1)
    b: object  # mx.array (B, 1, 1)


@dataclass
class _CapTerm:
    unit: object  # mx.array (D,) float32
    on: object  # mx.array (B, 1, 1): 1 for rows capped here, 0 for the others
    bound: object  # mx.array (B, 1, 1): the largest projection allowed


def _projection_coefficients(iv: Intervention, layer: int, prev_layer: int | None) -> tuple[float, float, float]:
    """(a, c, b) of a projection op at `layer`: on the stream at the range's first layer, else on the block's write."""
    on_stream = prev_layer is None
    m = iv.midpoints
    if iv.op is Op.ABLATE:
        a, b = -iv.alpha, 0.0
    elif iv.op is Op.REFLECT:
        if m is None:
            centre = 0.0
        elif on_stream:
            centre = float(m[layer])
        else:  # the write is mirrored about how far the class centre moves along u in this block
            centre = float(m[layer]) - float(m[prev_layer])
        a, b = -2.0 * iv.alpha, 2.0 * iv.alpha * centre
    else:  # clamp: set the stream's projection, then keep every later write from moving it
        a, b = -1.0, float(iv.value) if on_stream else 0.0
    return a, (0.0 if on_stream else -a), b


@dataclass
class RowSteering:
    """Per-layer terms for one batch composition; build once, apply every step while rows stay the same."""

    batch_size: int
    terms: dict[int, list] = field(default_factory=dict)
    needs_block_input: bool = False  # some term reads the block's input (a write op over a range)

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
                for position, layer in enumerate(iv.layers):
                    v = iv.directions[layer].astype(np.float32)
                    seq = stages.setdefault(layer, [])
                    prev = latest.get((r, layer), -1)
                    kind = "add" if iv.op is Op.ADD else ("cap" if iv.op is Op.CAP else "proj", iv.key)
                    start = prev if kind == "add" and prev >= 0 and seq[prev][0] == "add" else prev + 1
                    j = next((i for i in range(start, len(seq)) if seq[i][0] == kind), None)
                    if j is None:
                        if kind == "add":
                            seq.append([kind, np.zeros((B, v.shape[0]), np.float32)])
                        else:
                            norm = float(np.linalg.norm(v))
                            zeros = lambda: np.zeros(B, np.float32)  # noqa: E731
                            seq.append([kind, v / norm if norm > 0 else v, zeros(), zeros(), zeros()])
                        j = len(seq) - 1
                    latest[(r, layer)] = j
                    stage = seq[j]
                    if iv.op is Op.ADD:
                        stage[1][r] += iv.per_layer_alpha * v
                    elif iv.op is Op.CAP:  # stage[2] is then "on", stage[3] the bound
                        stage[2][r], stage[3][r] = 1.0, float(iv.value)
                    else:
                        prev_layer = iv.layers[position - 1] if position else None
                        stage[2][r], stage[3][r], stage[4][r] = _projection_coefficients(iv, layer, prev_layer)
        out = cls(batch_size=B)
        target = dtype or mx.float32
        for layer, seq in stages.items():
            for stage in seq:
                if stage[0] == "add":
                    term = _AddTerm(mx.array(stage[1][:, None, :]).astype(target))
                elif stage[0][0] == "cap":
                    _, unit, on, bound, _ = stage
                    term = _CapTerm(mx.array(unit), mx.array(on[:, None, None]), mx.array(bound[:, None, None]))
                else:
                    _, unit, a, c, b = stage
                    reads_input = bool(np.any(c))
                    term = _ProjTerm(
                        mx.array(unit),
                        mx.array(a[:, None, None]),
                        mx.array(c[:, None, None]) if reads_input else None,
                        mx.array(b[:, None, None]),
                    )
                    out.needs_block_input = out.needs_block_input or reads_input
                out.terms.setdefault(layer, []).append(term)
        return out

    def apply(self, layer: int, h, block_input=None):
        """h steered at `layer`; `block_input` (the block's input) is needed where a term reads it."""
        terms = self.terms.get(layer)
        if not terms:
            return h
        if h.shape[0] != self.batch_size:
            raise ValueError(f"steering was built for {self.batch_size} rows but the batch has {h.shape[0]}")
        for term in terms:
            if isinstance(term, _AddTerm):
                h = h + term.delta_as(h.dtype)
            elif isinstance(term, _CapTerm):
                import mlx.core as mx

                h32 = h.astype(term.unit.dtype)
                excess = mx.maximum((h32 @ term.unit)[..., None] - term.bound, 0.0)
                h = (h32 - term.on * excess * term.unit).astype(h.dtype)
            else:
                h32 = h.astype(term.unit.dtype)
                shift = term.a * (h32 @ term.unit)[..., None] + term.b
                if term.c is not None:
                    if block_input is None or block_input.shape != h.shape:
                        raise ValueError(f"layer {layer}: a range operation needs the block's input (shape {tuple(h.shape)})")
                    shift = shift + term.c * (block_input.astype(term.unit.dtype) @ term.unit)[..., None]
                h = (h32 + shift * term.unit).astype(h.dtype)
        return h
