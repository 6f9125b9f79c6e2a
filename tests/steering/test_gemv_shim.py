"""The gemv shim (steering/gemv_shim.c): decode-sized products give what sgemm gives.

Products of up to 8 rows against a weight stored (N, K) go to the shim's own kernel
(threaded above a size); other one-row products to sgemv.

Products are checked against float64 numpy in every transpose combination; greedy
generations (plain, steered, batch of one and of several rows) must be token for token
the same with the shim routing and with every product left to OpenBLAS's sgemm, on the
tiny models of every family and on the default model. The shim is switched inside one
process (mlx_interp_gemv_shim_enable), so both runs use the same loaded weights.
"""

import ctypes
import os
from contextlib import contextmanager

import numpy as np
import pytest

from mlx_interp.steering.backend import blas_choice, gemv_rows
from mlx_interp.steering.generation import generate
from mlx_interp.steering.interventions import Intervention, Op


def _shim():
    path = blas_choice().gemv
    if path is None:
        if os.environ.get("MLX_INTERP_REQUIRE_GEMV"):  # set by .ci/run when a compiler and OpenBLAS are there
            pytest.fail("MLX_INTERP_REQUIRE_GEMV is set but the gemv shim did not load")
        pytest.skip("no gemv shim in this process (not Linux + OpenBLAS, no C compiler, or MLX_INTERP_GEMV=0)")
    lib = ctypes.CDLL(path)
    lib.mlx_interp_gemv_shim_routed.restype = ctypes.c_long
    return lib


@contextmanager
def _routing(on: bool, rows: int = 1):
    lib = _shim()
    lib.mlx_interp_gemv_shim_enable(1 if on else 0)
    lib.mlx_interp_gemv_shim_rows(rows)
    try:
        yield lib
    finally:
        lib.mlx_interp_gemv_shim_enable(1)
        lib.mlx_interp_gemv_shim_rows(gemv_rows())  # the process's setting again


@pytest.mark.parametrize("rows", [1, 4, 8])
@pytest.mark.parametrize("M,K,N", [(1, 576, 1536), (1, 7, 5), (5, 7, 1), (1, 1, 1), (3, 4, 5), (1, 64, 300), (300, 64, 1),
                                   (8, 576, 1536), (6, 33, 3001), (4, 600, 2000), (2, 576, 579), (7, 9, 70000)])
def test_products_match_float64(M, K, N, rows):
    import mlx.core as mx

    rng = np.random.default_rng(M * 1000 + K + N)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    A, B = mx.array(a), mx.array(b)
    At, Bt = mx.array(a.T.copy()).T, mx.array(b.T.copy()).T  # the same values, stored transposed
    with _routing(True, rows) as lib:
        before = lib.mlx_interp_gemv_shim_routed()
        cases = {
            "nn": A @ B, "nt": A @ Bt, "tn": At @ B, "tt": At @ Bt,
            "batched": (mx.array(np.stack([a, a])) @ B)[1],
            "addmm": mx.addmm(mx.ones((M, N)), A, B, alpha=2.0, beta=0.5),
        }
        mx.eval(list(cases.values()))
        routed = lib.mlx_interp_gemv_shim_routed() - before
    scale = np.abs(ref).max() + 1e-9
    for name, got in cases.items():
        want = 2 * ref + 0.5 if name == "addmm" else ref
        assert np.abs(np.array(got) - want).max() / scale < 1e-5, name
    if M == 1 or N == 1 or (M <= rows and N > 1):
        assert routed > 0  # the one-row (or few-row) products went around sgemm


def test_concurrent_products_from_two_threads():
    """Two threads multiplying at once (two mlx streams could): the second computes alone, both right."""
    import threading

    lib = _shim()
    fn = lib.cblas_sgemm
    f32p = ctypes.POINTER(ctypes.c_float)
    fn.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, f32p, ctypes.c_int, f32p, ctypes.c_int,
                                         ctypes.c_float, f32p, ctypes.c_int]
    rng = np.random.default_rng(7)
    M, K, N = 4, 576, 3000
    jobs = []
    for _ in range(2):
        a = rng.standard_normal((M, K)).astype(np.float32)
        w = rng.standard_normal((N, K)).astype(np.float32)
        jobs.append((a, w, (a.astype(np.float64) @ w.T.astype(np.float64))))
    errors: list[float] = []

    def run(a, w, ref):
        for _ in range(50):
            c = np.zeros((M, N), np.float32)
            fn(101, 111, 112, M, N, K, 1.0, a.ctypes.data_as(f32p), K, w.ctypes.data_as(f32p), K, 0.0,
               c.ctypes.data_as(f32p), N)  # row-major x @ W.T, as mlx's Linear calls it
            errors.append(float(np.abs(c - ref).max() / np.abs(ref).max()))

    with _routing(True, 8):
        threads = [threading.Thread(target=run, args=job) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert len(errors) == 100 and max(errors) < 1e-5


def _direction(lm, seed=3):
    d = np.random.default_rng(seed).standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _runs(lm, prompts, steps, rows=1):
    iv = Intervention("shim", _direction(lm), Op.ADD, alpha=2.0)
    out = []
    for on in (True, False):
        with _routing(on, rows):
            got = [g.tokens for g in generate(lm, prompts[:1], max_tokens=steps, chat=False)]  # batch of one
            got += [g.tokens for g in generate(lm, prompts[:1], [[iv]], max_tokens=steps, chat=False)]
            got += [g.tokens for g in generate(lm, prompts, [[iv], []] * (len(prompts) // 2), max_tokens=steps, chat=False)]
        out.append(got)
    return out


def test_tiny_models_same_tokens(tiny_lm):
    routed, plain = _runs(tiny_lm, [[5, 6, 7, 8], [40, 41, 42, 43, 44, 45]], steps=16)
    assert routed == plain


def test_default_model_same_tokens(default_lm):
    tok = default_lm.tokenizer
    prompts = [tok.encode(p) for p in ("Write a story about a dragon.", "What is the capital of France?",
                                       "List three fruits.", "Explain gravity to a child.")]
    routed, plain = _runs(default_lm, prompts, steps=32)
    assert routed == plain


def test_few_row_routing_same_tokens(tiny_lm):
    """Up to 8 rows (the default MLX_INTERP_GEMV_ROWS): a small batch's products in the shim's kernel, token for token as sgemm."""
    prompts = [[5, 6, 7, 8], [40, 41, 42, 43, 44, 45], [9, 10], [70, 71, 72], [11, 12, 13], [80], [3, 3, 3, 3], [60, 61]]
    routed, plain = _runs(tiny_lm, prompts, steps=16, rows=8)
    assert routed == plain


def test_default_model_few_rows_same_tokens(default_lm):
    tok = default_lm.tokenizer
    prompts = [tok.encode(p) for p in ("Write a story about a dragon.", "What is the capital of France?",
                                       "List three fruits.", "Explain gravity to a child.")]
    routed, plain = _runs(default_lm, prompts, steps=32, rows=8)
    assert routed == plain


_POOL_THREADS_SIGNALS = r"""
import ctypes, os, sys
import numpy as np
from mlx_interp.steering.backend import prefer_fast_blas
lib = ctypes.CDLL(prefer_fast_blas().gemv)  # the shim, in front of OpenBLAS as the server loads it
f32p = ctypes.POINTER(ctypes.c_float)
lib.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, f32p, ctypes.c_int, f32p, ctypes.c_int,
                                                 ctypes.c_float, f32p, ctypes.c_int]

def product(M, N, K):
    a, w, c = (np.ones(s, np.float32) for s in ((M, K), (N, K), (M, N)))
    lib.cblas_sgemm(101, 111, 112, M, N, K, 1.0, a.ctypes.data_as(f32p), K, w.ctypes.data_as(f32p), K, 0.0,
                    c.ctypes.data_as(f32p), N)
    assert c[0, 0] == K

product(2, 8, 8)  # too small for the pool: loads everything lazily without starting it
before = set(os.listdir("/proc/self/task"))
product(4, 70000, 64)  # big enough: the pool starts
for tid in sorted(set(os.listdir("/proc/self/task")) - before):
    status = open(f"/proc/self/task/{tid}/status").read()
    print(int(status.split("SigBlk:")[1].split()[0], 16))
"""


def test_pool_threads_block_the_servers_signals(tmp_path):
    """SIGINT/SIGTERM must reach the server's own threads: the pool's workers start with them blocked."""
    import signal
    import subprocess
    import sys

    _shim()  # skips where this process has no shim
    script = tmp_path / "pool_signals.py"
    script.write_text(_POOL_THREADS_SIGNALS)
    env = dict(os.environ, MLX_INTERP_GEMV_THREADS="3")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    masks = [int(line) for line in out.stdout.split()]
    assert len(masks) == 2  # three threads share a product: the caller and two workers
    for mask in masks:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            assert mask & (1 << (sig - 1)), f"a pool worker can take signal {sig.name} (SigBlk {mask:#x})"
