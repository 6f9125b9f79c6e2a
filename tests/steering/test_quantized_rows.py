"""A batch's quantized products as one matmul (steering/quantized_rows.py).

The swap is on by default only for mlx's CUDA backend, where it was measured
(bench/gpu/qmm_layout.py); here it is forced on CPU with MLX_INTERP_FLAT_QMM=1 to check that it
is the same product: every row's result equals mlx's own quantized matmul of that row, and greedy decoding of quantized tiny models (steered, compiled or not) gives
the same tokens and logits with and without it.
"""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_interp.steering.model import load_model
from mlx_interp.steering.quantized_rows import (
    FLAT_ENV,
    RowsQuantizedEmbedding,
    RowsQuantizedLinear,
    flat_enabled,
    flatten_quantized_rows,
    rows_product,
)
from test_fused_projections import _decode, _same


def _weights(n=96, k=64, dtype=mx.float32, seed=0):
    mx.random.seed(seed)
    w = mx.random.normal((n, k)).astype(dtype)
    return mx.quantize(w, group_size=32, bits=4)


@pytest.mark.parametrize("dtype", (mx.float32, mx.bfloat16))
@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (3, 1), (7, 1), (8, 1), (9, 1), (1, 5), (3, 4), (16, 1)])
def test_each_row_is_mlxs_own_product(dtype, shape):
    wq, scales, biases = _weights(dtype=dtype)
    mx.random.seed(1)
    x = mx.random.normal((*shape, 64)).astype(dtype)
    got = rows_product(x, wq, scales, biases, 32, 4, "affine")
    assert got.shape == (*shape, 96) and got.dtype == dtype
    for index in np.ndindex(*shape):  # each row alone, as mlx computes a one-row product
        one = mx.quantized_matmul(x[index][None], wq, scales=scales, biases=biases, transpose=True, group_size=32, bits=4)
        tol = 1e-5 if dtype == mx.float32 else 2e-2
        np.testing.assert_allclose(np.array(got[index].astype(mx.float32)), np.array(one[0].astype(mx.float32)),
                                   rtol=tol, atol=tol * 10)


def test_switch(monkeypatch):
    from mlx_interp.steering import quantized_rows

    for value, want in (("0", False), ("off", False), ("1", True), ("yes", True)):
        monkeypatch.setenv(FLAT_ENV, value)
        assert flat_enabled() is want
    monkeypatch.delenv(FLAT_ENV)
    # auto: on for a GPU that is not Metal (mlx's CUDA build) only
    for device, metal, want in ((mx.gpu, False, True), (mx.gpu, True, False), (mx.cpu, False, False)):
        monkeypatch.setattr(quantized_rows, "mx", _FakeMx(device, metal))
        assert flat_enabled() is want, (device, metal)


class _FakeMx:
    """mlx.core as flat_enabled sees it on another machine."""

    def __init__(self, device, metal):
        self.gpu, self.cpu = mx.gpu, mx.cpu
        self._device = mx.Device(device, 0)
        self.metal = type("metal", (), {"is_available": staticmethod(lambda: metal)})

    def default_device(self):
        return self._device


def test_zero_rows_and_mxfp4():
    wq, scales, biases = _weights()
    empty = rows_product(mx.zeros((0, 1, 64)), wq, scales, biases, 32, 4, "affine")
    assert empty.shape == (0, 1, 96)
    w = mx.random.normal((96, 64))
    qw, qs = mx.quantize(w, group_size=32, bits=4, mode="mxfp4")
    x = mx.random.normal((5, 1, 64))
    got = rows_product(x, qw, qs, None, 32, 4, "mxfp4")
    want = mx.quantized_matmul(x, qw, scales=qs, transpose=True, group_size=32, bits=4, mode="mxfp4")
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-5)


def _quantized(path, monkeypatch, flat: bool):
    monkeypatch.setenv(FLAT_ENV, "0")
    lm = load_model(str(path), dtype="float32", progress=False)
    nn.quantize(lm.model, group_size=32, bits=4)
    if flat:
        flatten_quantized_rows(lm.model)
    return lm


@pytest.mark.parametrize("family", ("llama", "gemma", "qwen2"))
def test_quantized_models_decode_the_same(tiny_model_dirs, monkeypatch, family):
    plain = _quantized(tiny_model_dirs[family], monkeypatch, flat=False)
    flat = _quantized(tiny_model_dirs[family], monkeypatch, flat=True)
    kinds = {type(m) for _, m in flat.model.named_modules()}
    assert RowsQuantizedLinear in kinds and nn.QuantizedLinear not in kinds
    assert nn.QuantizedEmbedding not in kinds and RowsQuantizedEmbedding in kinds
    # the same parameters under the same names: only the call changed
    assert [k for k, _ in tree_flatten(flat.model.parameters())] == [k for k, _ in tree_flatten(plain.model.parameters())]
    for compiled in (False, True):
        _same(_decode(flat, compiled, steer=True), _decode(plain, compiled, steer=True), tol=1e-4)


def test_load_model_swaps_when_switched_on(tiny_model_dirs, monkeypatch, tmp_path):
    """A quantized checkpoint loaded natively gets the one-matmul modules when the switch is on, not when off."""
    from mlx_lm.utils import save_model
    import json
    import shutil

    from mlx_interp.steering.fused_projections import FUSE_ENV

    src = tiny_model_dirs["llama"]
    monkeypatch.setenv(FUSE_ENV, "0")  # saved under mlx-lm's own names
    lm = _quantized(src, monkeypatch, flat=False)
    monkeypatch.delenv(FUSE_ENV)
    out = tmp_path / "q"
    save_model(out, lm.model)
    config = json.loads((src / "config.json").read_text())
    config["quantization"] = {"group_size": 32, "bits": 4}
    (out / "config.json").write_text(json.dumps(config))
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".jinja"):
            shutil.copy(f, out / f.name)
    for value, want in (("1", True), ("0", False)):
        monkeypatch.setenv(FLAT_ENV, value)
        loaded = load_model(str(out), dtype="native", progress=False)
        kinds = {type(m) for _, m in loaded.model.named_modules()}
        assert (RowsQuantizedLinear in kinds) is want and (nn.QuantizedLinear in kinds) is not want
