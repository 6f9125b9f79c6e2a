"""Fuse each decoder layer's q/k/v projections, and its MLP's gate/up projections, into one matmul.

Why: a decode step multiplies one token per row by every weight matrix. On a GPU that step is
bound by kernel launches (~10 µs each, ~15 per layer), and on CPU every BLAS call carries its own
overhead; the projections that read the same input (q, k and v; gate and up) can be one product
with their weights concatenated along the output dimension, and then split.

How, without touching mlx-lm's attention and MLP code: `q_proj` (`gate_proj`) is replaced by a
module that computes the fused product once, returns its own part and remembers the others for
that very input array object; `k_proj` and `v_proj` (`up_proj`) become modules that, called with
the same object (`x is remembered`), hand back their remembered part and forget it. Called with
any other input (none of the families tested does; a guard), they compute their own product from
their slice of the fused weight, so the result is always right. The identity check also holds
inside `mx.compile` tracing (steering/compiled_step.py): the same Python array object flows from
the attention code to all three calls. Remembered parts are dropped as soon as they are taken, so
no array outlives the forward pass (or the trace) that made it. A layer whose code calls q_proj
but not k/v (gemma3n's KV-shared layers) is not fused: it would compute k and v for nothing and
keep them until its next call.

The separate weights are dropped: the fused module holds the only copy. Only modules whose type is
exactly `nn.Linear` or `nn.QuantizedLinear` are fused (a sharded or otherwise special layer is left
as it is), and only when the three (two) agree on input size, dtype, bias and quantization (mode,
bits, group size). Affine quantization groups run along the input dimension, so concatenating
weight, scales and biases along the output dimension is exact. Families with other names
(phi3's `qkv_proj` is already fused; gpt2's `c_attn` too) are left alone.

`MLX_INTERP_FUSE=0` turns this off (steering/model.py asks `fuse_enabled()`).
"""

from __future__ import annotations

import os
from typing import Any

import mlx.core as mx
import mlx.nn as nn

FUSE_ENV = "MLX_INTERP_FUSE"  # "1" (default) fuses q/k/v and gate/up at load; "0" keeps mlx-lm's separate modules

# (owner attribute, part attributes): the first part owns the fused weights.
GROUPS = (
    ("q_proj", "k_proj", "v_proj"),
    ("gate_proj", "up_proj"),
)

_LINEAR_TYPES = (nn.Linear, nn.QuantizedLinear)


def fuse_enabled() -> bool:
    """On unless MLX_INTERP_FUSE is 0/false/no/off."""
    return os.environ.get(FUSE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class _Shared:
    """What the parts of one fused group share: the owner's last input and the parts not yet taken.

    `current` is one tuple `(x, parts)` replaced whole by each owner call, so a part reads an input
    and its parts that belong together. A plain object (not an mx.array, dict or list): an nn.Module
    keeps it out of its parameters.
    """

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: tuple[Any, list[Any]] | None = None

    @property
    def x(self):
        return None if self.current is None else self.current[0]


class FusedProjection(nn.Module):
    """Stands in for the group's first projection (q_proj, gate_proj); holds the fused linear as `fused`.

    `splits` are the boundaries of the parts along the output dimension: part i is
    `y[..., splits[i]:splits[i + 1]]`.
    """

    def __init__(self, fused: nn.Module, splits: tuple[int, ...]):
        super().__init__()
        self.fused = fused
        object.__setattr__(self, "splits", tuple(splits))
        object.__setattr__(self, "shared", _Shared())

    def __call__(self, x):
        y = self.fused(x)
        s = self.splits
        parts = [y[..., s[i] : s[i + 1]] for i in range(len(s) - 1)]
        self.shared.current = (x, parts[1:])
        return parts[0]

    def part_product(self, index: int, x):
        """Part `index`'s own product of `x`, from its slice of the fused weight (the guard path)."""
        a, b = self.splits[index], self.splits[index + 1]
        f = self.fused
        if isinstance(f, nn.QuantizedLinear):
            from .quantized_rows import RowsQuantizedLinear, rows_product

            biases = f.get("biases")
            weight, scales = f["weight"][a:b], f["scales"][a:b]
            biases = None if biases is None else biases[a:b]
            if isinstance(f, RowsQuantizedLinear):  # the whole product flattens a batch's rows: so does a part
                y = rows_product(x, weight, scales, biases, f.group_size, f.bits, f.mode)
            else:
                y = mx.quantized_matmul(x, weight, scales=scales, biases=biases, transpose=True,
                                        group_size=f.group_size, bits=f.bits, mode=f.mode)
            return y + f["bias"][a:b] if "bias" in f else y
        w = f["weight"][a:b]
        return mx.addmm(f["bias"][a:b], x, w.T) if "bias" in f else x @ w.T

    def _extra_repr(self) -> str:
        return f"splits={self.splits}"


class FusedPart(nn.Module):
    """Stands in for a later projection of a group (k_proj, v_proj, up_proj); holds no weights of its own."""

    def __init__(self, owner: FusedProjection, index: int):
        super().__init__()
        # Kept out of the module tree: the owner's parameters must be counted (and saved) once.
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "index", index)

    def __call__(self, x):
        shared = self.owner.shared
        current = shared.current
        if current is not None and current[0] is x and current[1][self.index - 1] is not None:
            parts = current[1]
            out, parts[self.index - 1] = parts[self.index - 1], None
            if shared.current is current and all(p is None for p in parts):
                shared.current = None  # every part taken: keep nothing past this forward pass
            return out
        return self.owner.part_product(self.index, x)

    def _extra_repr(self) -> str:
        return f"part={self.index}, splits={self.owner.splits}"


def _fusable(mods: list) -> bool:
    """Whether these projections can be one: exactly Linear/QuantizedLinear, all alike but for their output size."""
    first = mods[0]
    kind = type(first)
    if kind not in _LINEAR_TYPES or any(type(m) is not kind for m in mods):
        return False
    keys = set(first.keys())
    if any(set(m.keys()) != keys for m in mods):  # the same arrays: bias or not, quantization biases or not
        return False
    for key in keys:
        arrays = [m[key] for m in mods]
        if not all(isinstance(a, mx.array) for a in arrays):
            return False
        if any(a.dtype != arrays[0].dtype or a.shape[1:] != arrays[0].shape[1:] for a in arrays):
            return False
    if kind is nn.QuantizedLinear:
        quant = {(m.mode, m.bits, m.group_size) for m in mods}
        if len(quant) != 1:
            return False
    return True


def _fuse_group(parent: nn.Module, names: tuple[str, ...]) -> bool:
    mods = [parent.get(name) for name in names]
    if any(m is None for m in mods) or not _fusable(mods):
        return False
    first = mods[0]
    sizes = [int(m["weight"].shape[0]) for m in mods]
    splits = tuple(int(sum(sizes[:i])) for i in range(len(sizes) + 1))
    if isinstance(first, nn.QuantizedLinear):
        fused: nn.Module = nn.QuantizedLinear(
            first.group_size, 1, bias=False, group_size=first.group_size, bits=first.bits, mode=first.mode
        )
        fused.biases = None  # replaced below when the originals have them
    else:
        fused = nn.Linear(1, 1, bias=False)
    for key in first.keys():
        fused[key] = mx.concatenate([m[key] for m in mods], axis=0)
    if not first.trainable_parameters():
        fused.freeze()
    owner = FusedProjection(fused, splits)
    setattr(parent, names[0], owner)
    for i, name in enumerate(names[1:], start=1):
        setattr(parent, name, FusedPart(owner, i))
    return True


def fuse_projections(model: nn.Module) -> int:
    """Fuse q/k/v and gate/up wherever a module of `model` has them; returns how many groups were fused.

    The originals are dropped from the model, so once nothing else holds them their memory is freed.
    """
    groups = 0
    for _, module in list(model.named_modules()):
        if isinstance(module, (FusedProjection, FusedPart)):
            continue
        for names in GROUPS:
            if names[0] == "q_proj" and getattr(module, "is_kv_shared_layer", False):
                continue  # gemma3n: a layer reading another layer's KV calls q_proj alone; k/v would be waste
            if all(isinstance(module.get(name), nn.Module) for name in names):
                groups += _fuse_group(module, names)
    return groups


def fused_source(module):
    """The linear module that really holds a projection's weights: `module` itself unless it was fused."""
    if isinstance(module, FusedProjection):
        return module.fused
    if isinstance(module, FusedPart):
        return module.owner.fused
    return module
