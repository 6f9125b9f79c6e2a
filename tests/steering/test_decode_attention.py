"""The compiled step's own decode attention (steering/decode_attention.py).

The CUDA kernel itself runs only on mlx's CUDA backend; bench/gpu/decode_attention_check.py holds it
to `reference` there. Here: `reference` computes what mlx's masked attention computes, the compiled
step really sends every layer's attention to it (and nothing else), and the tokens do not change.
"""

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.steering import decode_attention as da
from test_compiled_step import _add, _decode, _same


@pytest.mark.parametrize("B,Hq,Hkv,T,D,dtype", [
    (1, 4, 4, 16, 64, mx.float32),
    (3, 8, 2, 40, 128, mx.float32),
    (2, 6, 1, 33, 16, mx.float32),
    (4, 4, 2, 64, 64, mx.bfloat16),
])
def test_reference_is_masked_attention_over_the_rows_own_slots(B, Hq, Hkv, T, D, dtype):
    rng = np.random.default_rng(B * T)
    q, k, v = (mx.array(rng.standard_normal(s).astype(np.float32)).astype(dtype)
               for s in ((B, Hq, 1, D), (B, Hkv, T, D), (B, Hkv, T, D)))
    position = mx.array(T - 3, dtype=mx.int32)  # slots past it are not written yet
    left = mx.array(rng.integers(-2, 6, B).astype(np.int32))  # a negative padding (after trims) hides nothing
    slots = mx.arange(T)
    mask = (slots <= position) & (slots >= left[:, None, None, None])
    want = mx.fast.scaled_dot_product_attention(q, k, v, scale=D ** -0.5, mask=mask)
    got = da.reference(q, k, v, D ** -0.5, position, left)
    tol = 1e-5 if dtype == mx.float32 else 2e-2
    np.testing.assert_allclose(np.array(got.astype(mx.float32)), np.array(want.astype(mx.float32)), atol=tol, rtol=tol)
    # and a slot outside a row's range does matter to the unmasked function (the mask is not vacuous)
    plain = mx.fast.scaled_dot_product_attention(q, k, v, scale=D ** -0.5)
    assert not np.allclose(np.array(plain.astype(mx.float32)), np.array(want.astype(mx.float32)), atol=tol)


def test_the_compiled_step_sends_every_layer_there_and_tokens_stay(tiny_lm, monkeypatch):
    rows = [([5, 6, 7, 8], (_add(tiny_lm),)), ([9, 10], ()), ([11, 12, 13], ())]
    monkeypatch.setenv(da.KERNEL_ENV, "0")
    before, used = _decode(tiny_lm, rows, compiled=True, capture=True)
    assert used
    calls = []
    real = da.reference

    def counted(q, k, v, scale, position, left):
        calls.append((q.shape, k.shape))
        return real(q, k, v, scale, position, left)

    monkeypatch.setenv(da.KERNEL_ENV, "reference")
    monkeypatch.setattr(da, "reference", counted)
    after, used = _decode(tiny_lm, rows, compiled=True, capture=True)
    assert used
    assert len(calls) == tiny_lm.num_layers  # one trace, every layer's attention diverted
    assert all(q[0] == 3 and q[2] == 1 for q, _ in calls)
    _same(after, before)


def test_other_calls_go_through_and_the_function_comes_back(monkeypatch):
    monkeypatch.setenv(da.KERNEL_ENV, "reference")
    original = mx.fast.scaled_dot_product_attention
    q = mx.ones((1, 2, 1, 8))
    k = v = mx.ones((1, 2, 4, 8))
    ours, other = mx.array([[[[True] * 4]]]), mx.array([[[[True] * 4]]])
    seen = []
    monkeypatch.setattr(da, "reference", lambda *a: seen.append(a) or mx.zeros(q.shape))
    with pytest.raises(RuntimeError):
        with da.for_step_masks([ours], mx.array(3), mx.array([0])):
            mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=other)
            mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0)
            mx.fast.scaled_dot_product_attention(mx.ones((1, 2, 2, 8)), k, v, scale=1.0, mask=ours)  # two queries: a prefill
            assert not seen
            mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=ours)
            assert len(seen) == 1
            raise RuntimeError("a failed trace")
    assert mx.fast.scaled_dot_product_attention is original


def test_modes_and_shapes(monkeypatch):
    monkeypatch.setenv(da.KERNEL_ENV, "0")
    assert da.mode() == "off"
    monkeypatch.setenv(da.KERNEL_ENV, "reference")
    assert da.mode() == "reference"
    monkeypatch.delenv(da.KERNEL_ENV)
    assert da.mode() == ("kernel" if mx.default_device().type == mx.gpu and not mx.metal.is_available() else "off")
    q = mx.zeros((2, 8, 1, 128), mx.bfloat16)
    k = mx.zeros((2, 2, 512, 128), mx.bfloat16)
    assert da.fits(q, k, k)
    assert not da.fits(q, mx.zeros((2, 2, da.MAX_KEYS + 256, 128), mx.bfloat16), mx.zeros((2, 2, da.MAX_KEYS + 256, 128), mx.bfloat16))
    assert not da.fits(mx.zeros((2, 8, 1, 80), mx.bfloat16), mx.zeros((2, 2, 512, 80), mx.bfloat16), mx.zeros((2, 2, 512, 80), mx.bfloat16))
    assert da.fits(mx.zeros((2, 8, 1, 80), mx.bfloat16), mx.zeros((2, 2, 512, 80), mx.bfloat16), mx.zeros((2, 2, 512, 80), mx.bfloat16), head_dims=None)
    assert not da.fits(mx.zeros((2, 8, 1, 128), mx.float16), k, k)  # mixed dtypes


def test_a_row_with_no_slot_in_range_gets_zeros_not_nan():
    q = mx.ones((2, 4, 1, 16))
    k = v = mx.ones((2, 2, 32, 16))
    out = np.array(da.reference(q, k, v, 0.25, mx.array(10, dtype=mx.int32), mx.array([0, 20], dtype=mx.int32)))
    assert np.isfinite(out).all()
    assert np.allclose(out[1], 0.0) and np.allclose(out[0], 1.0)


def test_warm_up_falls_back_to_mlx_when_the_kernel_fails(tiny_llama, monkeypatch):
    """A kernel that cannot build or launch on a machine must not take the server down: warm-up
    (the server's first trace) turns it off for the process and traces again with mlx's path."""
    from mlx_interp.steering.generation import steering_session

    monkeypatch.setattr(da, "_failed", None)
    monkeypatch.setenv(da.KERNEL_ENV, "reference")

    def broken(*_):
        raise RuntimeError("nvrtc: too many resources requested for launch")

    monkeypatch.setattr(da, "reference", broken)
    with steering_session(tiny_llama, capture_layers=None, compiled=True) as batch:
        with pytest.warns(RuntimeWarning, match="too many resources"):
            batch.warm_up()
        assert da.mode() == "off" and "too many resources" in da.failure()
        assert len(batch.compiled._fns) == 2 and not batch.rows  # traced again (plain, probed), left empty
        pre = batch.prefill([5, 6, 7])
        batch.add(0, pre)
        logits, _ = batch.step([int(mx.argmax(pre.logits.reshape(-1)))], capture=False)
        assert np.isfinite(np.array(logits)).all()


def test_warm_up_errors_are_not_swallowed_when_nothing_is_diverted(tiny_llama, monkeypatch):
    from mlx_interp.steering.generation import steering_session

    monkeypatch.setattr(da, "_failed", None)
    monkeypatch.setenv(da.KERNEL_ENV, "0")
    with steering_session(tiny_llama, capture_layers=None, compiled=True) as batch:
        monkeypatch.setattr(batch, "prefill", lambda *_: (_ for _ in ()).throw(ValueError("a real failure")))
        with pytest.raises(ValueError, match="a real failure"):
            batch.warm_up()
    assert da.failure() is None
