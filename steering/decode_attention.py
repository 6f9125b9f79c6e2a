"""Attention for the compiled decode step on mlx's CUDA backend: one kernel over each row's own keys.

Why: the compiled step (steering/compiled_step.py) attends over the batch cache's whole preallocated
buffer with a mask that hides the slots not yet written and each row's left padding. mlx's CUDA
backend (0.32.4) has a fused one-query attention kernel, but it refuses any array mask (and so does
its cuDNN decode path), so every layer falls back to unfused operations: two matmuls, a select and
a softmax, several launches where mlx-lm's single-sequence cache needs one. One stream on a GPU is
bound by launches, not by the device (bench/README.md, "GPU"): that fallback was measured at about
1.5 ms of a 6-7 ms step on an H200.

What: a kernel (mx.fast.cuda_kernel) that attends over slots [left_padding[row], position] of the
buffer and nothing else: one block per (row, query head), each warp an online softmax over its
share of the keys, the warps combined at the end; grouped-query heads read their shared key head;
float32 arithmetic as mlx's own kernels. `reference` below is the same function in plain mlx ops
(the CPU tests hold it to mlx's masked attention; bench/gpu/decode_attention_check.py holds the
kernel to it on a GPU).

Where: only while the compiled step is traced, only for the mask that step made (any other call of
mx.fast.scaled_dot_product_attention, with any other mask, goes through untouched), and only for
buffers of up to MAX_KEYS slots: beyond that one block per head has too many keys to walk, and mlx's
fallback, whose matmuls spread the keys over the whole device, stays. `MLX_INTERP_DECODE_KERNEL`:
"auto" (default: on for a GPU that is not Metal; Metal's own vector kernel takes masks), "0" off,
"reference" the plain-mlx function on any device (tests).
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager

import mlx.core as mx

KERNEL_ENV = "MLX_INTERP_DECODE_KERNEL"
MAX_KEYS = 1024  # mlx's own vector kernel switches to two passes above this many keys
# 1024 threads a block leave each thread at most 64 registers, and mlx's generated signature cannot
# carry __launch_bounds__: with these two constants nvcc 13.0 used 55-61 registers for every head size
# and architecture from sm_75 to sm_120, no spills; 4 keys per warp took 72 at head size 256 (launch
# failure). Change them only with that compile check (and bench/gpu/decode_attention_check.py) redone.
WARPS = 32  # warps per (row, head) block: 1024 threads, as mlx's one-pass vector kernel
KEYS_PER_WARP = 2  # keys each warp has in flight per round: loads issued before the reductions
HEAD_DIMS = (64, 96, 128, 256)  # a multiple of 32 (a warp's lanes split the head), at most 256

_SOURCE = """
    constexpr int E = D / 32;
    constexpr int REP = HQ / HKV;
    const int row = blockIdx.x / HQ;
    const int head = blockIdx.x % HQ;
    const int warp = threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    const int n_keys = k_shape[2];
    const int first = left[row] > 0 ? left[row] : 0;
    const int last = position[0] < n_keys - 1 ? position[0] : n_keys - 1;
    constexpr float NEG_INF = -cuda::std::numeric_limits<float>::infinity();
    const float qscale = scale[0] * 1.4426950408889634f;  // exp2 below: fold log2(e) into the query

    const long long kv_base = ((long long)row * HKV + head / REP) * (long long)n_keys * D + lane * E;
    const InT* qp = q + ((long long)row * HQ + head) * D + lane * E;
    const InT* kp = k + kv_base;
    const InT* vp = v + kv_base;

    float qv[E], acc[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
        qv[e] = static_cast<float>(qp[e]) * qscale;
        acc[e] = 0.f;
    }
    float m = NEG_INF, l = 0.f;

    for (int t0 = first + warp * KEYS; t0 <= last; t0 += NWARPS * KEYS) {
        float s[KEYS], vv[KEYS][E];
#pragma unroll
        for (int u = 0; u < KEYS; ++u) {
            s[u] = 0.f;
            const int t = t0 + u;
#pragma unroll
            for (int e = 0; e < E; ++e) {
                vv[u][e] = 0.f;
                if (t <= last) {
                    s[u] += qv[e] * static_cast<float>(kp[(long long)t * D + e]);
                    vv[u][e] = static_cast<float>(vp[(long long)t * D + e]);
                }
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
            for (int u = 0; u < KEYS; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], off);
        }
        float m_new = m;
#pragma unroll
        for (int u = 0; u < KEYS; ++u) {
            if (t0 + u <= last) m_new = fmaxf(m_new, s[u]);
        }
        const float corr = exp2f(m - m_new);  // 0 on a warp's first keys (m is -inf)
        l *= corr;
#pragma unroll
        for (int e = 0; e < E; ++e) acc[e] *= corr;
#pragma unroll
        for (int u = 0; u < KEYS; ++u) {
            if (t0 + u <= last) {
                const float p = exp2f(s[u] - m_new);
                l += p;
#pragma unroll
                for (int e = 0; e < E; ++e) acc[e] += p * vv[u][e];
            }
        }
        m = m_new;
    }

    __shared__ float warp_max[NWARPS];
    __shared__ float warp_sum[NWARPS];
    __shared__ float warp_acc[NWARPS][D];
    if (lane == 0) {
        warp_max[warp] = m;
        warp_sum[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < E; ++e) warp_acc[warp][lane * E + e] = acc[e];
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += NWARPS * 32) {
        float top = NEG_INF;
        for (int w = 0; w < NWARPS; ++w) top = fmaxf(top, warp_max[w]);
        float total = 0.f, o = 0.f;
        for (int w = 0; w < NWARPS; ++w) {
            const float c = exp2f(warp_max[w] - top);  // 0 for a warp that saw no key
            total += warp_sum[w] * c;
            o += warp_acc[w][d] * c;
        }
        // A row with no slot in range (its padding past the position: the batch cache never makes one)
        // gets zeros, not 0/0: a NaN would fail the request as non-finite.
        out[((long long)row * HQ + head) * D + d] = static_cast<InT>(total > 0.f ? o / total : 0.f);
    }
"""

_kernel = None
_patch_lock = threading.RLock()  # the attention function is swapped only while one trace runs
# A process-wide fact, like the BLAS choice: set once if the kernel failed to build or run on this
# machine (a toolkit or GPU it was never compiled for); from then on every trace uses mlx's path.
_failed: str | None = None


def mode() -> str:
    """'kernel', 'reference' or 'off', from MLX_INTERP_DECODE_KERNEL, the device, and whether it failed here."""
    if _failed is not None:
        return "off"
    wanted = os.environ.get(KERNEL_ENV, "auto").strip().lower()
    if wanted in ("0", "false", "no", "off"):
        return "off"
    if wanted == "reference":
        return "reference"
    on_cuda = mx.default_device().type == mx.gpu and not mx.metal.is_available()
    return "kernel" if on_cuda else "off"


def give_up(reason: str) -> None:
    """Turn the diversion off for this process (DecodeBatch.warm_up calls it when a traced step fails)."""
    global _failed
    _failed = reason


def failure() -> str | None:
    """Why the diversion was turned off in this process, or None."""
    return _failed


def fits(q, k, v, head_dims=HEAD_DIMS) -> bool:
    """Whether a decode attention call has a shape the kernel handles (`head_dims=None`: any head size)."""
    B, Hq, L, D = q.shape
    return (
        L == 1
        and k.shape == v.shape
        and k.shape[0] == B
        and k.shape[3] == D
        and (head_dims is None or D in head_dims)
        and Hq % k.shape[1] == 0
        and k.shape[2] <= MAX_KEYS
        and q.dtype in (mx.float32, mx.float16, mx.bfloat16)
        and k.dtype == q.dtype
        and v.dtype == q.dtype
    )


def kernel(q, k, v, scale: float, position, left):
    """Attention of each row's one query over its keys [left[row], position] (inclusive), on CUDA."""
    global _kernel
    if _kernel is None:
        _kernel = mx.fast.cuda_kernel(
            name="mlx_interp_decode_attention",
            input_names=["q", "k", "v", "position", "left", "scale"],
            output_names=["out"],
            source=_SOURCE,
        )
    B, Hq, _, D = q.shape
    threads = WARPS * 32
    return _kernel(
        inputs=[q, k, v, position.reshape(1).astype(mx.int32), left.astype(mx.int32), mx.array([scale], mx.float32)],
        template=[("InT", q.dtype), ("D", D), ("HQ", Hq), ("HKV", k.shape[1]), ("NWARPS", WARPS),
                  ("KEYS", KEYS_PER_WARP)],
        grid=(B * Hq * threads, 1, 1),
        threadgroup=(threads, 1, 1),
        output_shapes=[q.shape],
        output_dtypes=[q.dtype],
    )[0]


def reference(q, k, v, scale: float, position, left):
    """The kernel's function in plain mlx: softmax over slots [max(left, 0), position], float32.

    Where mlx's masked attention and this differ: a row with no slot in range gets zeros here (mlx's
    fallback averages the whole buffer); the batch cache never makes such a row.
    """
    B, Hq, _, D = q.shape
    Hkv, T = k.shape[1], k.shape[2]
    qg = q.astype(mx.float32).reshape(B, Hkv, Hq // Hkv, 1, D) * scale
    scores = qg @ k.astype(mx.float32)[:, :, None].swapaxes(-1, -2)  # (B, Hkv, rep, 1, T)
    slots = mx.arange(T)
    valid = (slots <= position) & (slots >= mx.maximum(left, 0)[:, None])  # (B, T)
    scores = mx.where(valid[:, None, None, None, :], scores, -math.inf)
    weights = mx.softmax(scores, axis=-1)
    weights = mx.where(valid.any(axis=1)[:, None, None, None, None], weights, 0.0)  # no slot in range: zeros, as the kernel
    out = weights @ v.astype(mx.float32)[:, :, None]  # (B, Hkv, rep, 1, D)
    return out.reshape(B, Hq, 1, D).astype(q.dtype)


@contextmanager
def for_step_masks(masks: list, position, left):
    """While tracing a decode step: attention calls given one of `masks` (by identity) go to the
    kernel (or the reference, as `mode()` says; with mode 'off' nothing is swapped).

    `masks` is filled by the step's caches as the model asks them for masks, so it may be empty when
    this is entered.
    """
    chosen = mode()
    attend = {"kernel": kernel, "reference": reference}.get(chosen)
    if attend is None:
        yield
        return
    head_dims = HEAD_DIMS if chosen == "kernel" else None  # the reference takes any head size
    fast = mx.fast
    with _patch_lock:
        original = fast.scaled_dot_product_attention

        def scaled_dot_product_attention(q, k, v, *args, **kw):
            mask = kw.get("mask")
            plain_call = not args and set(kw) <= {"scale", "mask", "sinks"} and kw.get("sinks") is None
            if (plain_call and mask is not None and any(mask is m for m in masks)
                    and fits(q, k, v, head_dims)):
                return attend(q, k, v, float(kw["scale"]), position, left)
            return original(q, k, v, *args, **kw)

        fast.scaled_dot_product_attention = scaled_dot_product_attention
        try:
            yield
        finally:
            fast.scaled_dot_product_attention = original
