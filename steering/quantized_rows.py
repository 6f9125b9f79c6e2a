"""A decode batch's quantized products as one matmul per weight (mlx's CUDA backend).

Why: a decode step hands every Linear an input of shape (rows, 1, hidden). mlx's CUDA quantized
matmul reads that as `rows` separate one-row products, each reading the whole weight again: on an
H200, a 7B-shape 4-bit model's decode forward took ~90 ms at 32 rows against ~5 ms at one
(bench/gpu/qmm_layout.py; mlx-lm's own batch loop does the same). Given (rows, hidden), the same
product is one M=rows matmul that reads each weight once: the forward at 8 rows went from 32.6 to
19.6 ms, at 32 rows from 94 to 26 ms. Below 8 rows mlx runs its one-row kernel once per row either
way. (Padding 2-7 rows to 8 won in a matmul-only benchmark, but lost in the whole forward: 19.5
against 13.9 ms at 2 rows, so it is not done.)

How: every `nn.QuantizedLinear` (fused ones included) and `nn.QuantizedEmbedding` (a tied output
head's `as_linear`) gets a subclass whose product flattens the leading dimensions first. The
parameters, their names and the module tree stay as they were; only the call changes. Each row's
result is the same product of the same weights; the kernel (and so the rounding) may differ.

Where: only where the measurement was made, a GPU that is not Metal (mlx's CUDA build). Metal has
its own kernels and was not measured; the CPU path dequantizes (steering/backend.py).
`MLX_INTERP_FLAT_QMM=0` turns it off, `=1` forces it on any backend (tests).
"""

from __future__ import annotations

import os

import mlx.core as mx
import mlx.nn as nn

FLAT_ENV = "MLX_INTERP_FLAT_QMM"  # "auto" (default: on for a non-Metal GPU), "1" always, "0" never


def flat_enabled() -> bool:
    """On for mlx's CUDA backend unless MLX_INTERP_FLAT_QMM says otherwise."""
    wanted = os.environ.get(FLAT_ENV, "auto").strip().lower()
    if wanted in ("0", "false", "no", "off"):
        return False
    if wanted in ("1", "true", "yes", "on"):
        return True
    return mx.default_device().type == mx.gpu and not mx.metal.is_available()


def rows_product(x, weight, scales, biases, group_size: int, bits: int, mode: str):
    """x @ weight.T for a quantized weight, with x's leading dimensions as the rows of one product."""
    lead = x.shape[:-1]
    if x.size == 0:  # mlx's CPU kernel divides by the row count (SIGFPE); its own 3-D path returns an empty result
        return mx.zeros((*lead, weight.shape[0]), x.dtype)
    y = mx.quantized_matmul(
        x.reshape(-1, x.shape[-1]), weight, scales=scales, biases=biases, transpose=True,
        group_size=group_size, bits=bits, mode=mode,
    )
    return y.reshape(*lead, y.shape[-1])


class RowsQuantizedLinear(nn.QuantizedLinear):
    """nn.QuantizedLinear whose product treats every leading position as a row of one matmul."""

    def __call__(self, x):
        y = rows_product(x, self["weight"], self["scales"], self.get("biases"), self.group_size, self.bits, self.mode)
        return y + self["bias"] if "bias" in self else y


class RowsQuantizedEmbedding(nn.QuantizedEmbedding):
    """nn.QuantizedEmbedding whose `as_linear` (a tied output head) is one matmul over the rows."""

    def as_linear(self, x):
        return rows_product(x, self["weight"], self["scales"], self.get("biases"), self.group_size, self.bits, self.mode)


_SWAPS: dict[type, type] = {nn.QuantizedLinear: RowsQuantizedLinear, nn.QuantizedEmbedding: RowsQuantizedEmbedding}


def flatten_quantized_rows(model: nn.Module) -> int:
    """Give every quantized linear and embedding of `model` the one-matmul product; returns how many.

    The class of each module is swapped in place (the subclasses add no state), so parameters,
    their paths and anything holding the modules see the same objects. Only modules of exactly the
    two mlx types change: a sharded or otherwise special layer keeps its own call.
    """
    swapped = 0
    for _, module in model.named_modules():
        target = _SWAPS.get(type(module))
        if target is not None:
            module.__class__ = target
            swapped += 1
    return swapped
