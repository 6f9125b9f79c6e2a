"""The compiled step's decode attention kernel (steering/decode_attention.py) on mlx's CUDA backend.

    python bench/gpu/decode_attention_check.py [--out DIR]

1. Correctness: the kernel against `reference` (plain mlx) over float32, float16 and bfloat16, grouped
   and ungrouped heads, head sizes 64-256, left padding (negative included), the position short of the
   buffer's end with large values written past it (a leak would show), a row with no slot in range.
   Also called inside mx.compile, as the compiled step calls it; and, in step 2, against mlx's own
   masked attention. Exits 1 when any case is off by more than its dtype's tolerance.
2. Time per decode step's worth of attention (28 layers, Qwen2.5-7B's heads: 28 query, 4 key/value,
   128 wide, bfloat16), host and device together, for 1, 8 and 32 rows over a 512-slot buffer with
   301 slots written: the kernel; mlx's attention given the mask (what the compiled step ran before:
   mlx's unfused fallback); mlx's mask-free vector kernel over exactly the 301 written slots (what
   mlx-lm's single-sequence cache gets, and what a mask cannot reach).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

LAYERS = 28
REPEATS = 60


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import mlx.core as mx
    import numpy as np

    from mlx_interp.steering import decode_attention as da

    rng = np.random.default_rng(0)
    tolerances = {mx.float32: 1e-4, mx.float16: 4e-3, mx.bfloat16: 3e-2}
    cases = [  # B, Hq, Hkv, T (buffer), D, position, left padding per row
        (1, 28, 4, 256, 128, 17, [0]),
        (1, 28, 4, 512, 128, 300, [0]),
        (3, 28, 4, 1024, 128, 1000, [0, 5, 300]),
        (4, 8, 8, 256, 64, 100, [0, 1, 2, -3]),
        (2, 16, 2, 256, 96, 255, [0, 200]),
        (2, 8, 1, 256, 256, 40, [3, 0]),
        (5, 28, 4, 256, 128, 0, [0, 0, 0, 0, 0]),  # the first decoded token: one key
        (2, 8, 2, 256, 128, 10, [0, 20]),  # row 1 has no slot in range: zeros (the batch cache never makes one)
    ]
    failures, report = [], []
    compiled_kernel = mx.compile(lambda q, k, v, p, l: da.kernel(q, k, v, 0.125, p, l))
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        for B, Hq, Hkv, T, D, pos, left in cases:
            q = mx.array(rng.standard_normal((B, Hq, 1, D)).astype(np.float32)).astype(dtype)
            k = rng.standard_normal((B, Hkv, T, D)).astype(np.float32)
            v = rng.standard_normal((B, Hkv, T, D)).astype(np.float32)
            k[:, :, pos + 1:] = 50.0  # not written yet: must not count
            v[:, :, pos + 1:] = 1e4
            k, v = mx.array(k).astype(dtype), mx.array(v).astype(dtype)
            position, lefts = mx.array(pos, dtype=mx.int32), mx.array(left, dtype=mx.int32)
            want = np.array(da.reference(q, k, v, 0.125, position, lefts).astype(mx.float32))
            for how, got in (("eager", da.kernel(q, k, v, 0.125, position, lefts)),
                             ("compiled", compiled_kernel(q, k, v, position, lefts))):
                got = np.array(got.astype(mx.float32))
                err = float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))
                ok = bool(np.isfinite(got).all()) and err <= tolerances[dtype]
                line = {"dtype": str(dtype), "case": [B, Hq, Hkv, T, D, pos, left], "how": how, "max_rel_err": err, "ok": ok}
                report.append(line)
                if not ok:
                    failures.append(line)
    print(f"correctness: {len(report) - len(failures)}/{len(report)} cases within tolerance", flush=True)
    for f in failures:
        print("  FAILED", json.dumps(f), flush=True)

    timing = {}
    B_Hq, Hkv, T, D, pos = 28, 4, 512, 128, 300
    for B in (1, 8, 32):
        qs = [mx.random.normal((B, B_Hq, 1, D)).astype(mx.bfloat16) for _ in range(LAYERS)]
        ks = [mx.random.normal((B, Hkv, T, D)).astype(mx.bfloat16) for _ in range(LAYERS)]
        vs = [mx.random.normal((B, Hkv, T, D)).astype(mx.bfloat16) for _ in range(LAYERS)]
        position, lefts = mx.array(pos, dtype=mx.int32), mx.zeros((B,), mx.int32)
        slots = mx.arange(T)
        mask = (slots <= position) & (slots >= lefts[:, None, None, None])
        mx.eval(qs, ks, vs, mask)
        ways = {
            "kernel": lambda i: da.kernel(qs[i], ks[i], vs[i], 0.088, position, lefts),
            "masked_sdpa": lambda i: mx.fast.scaled_dot_product_attention(qs[i], ks[i], vs[i], scale=0.088, mask=mask),
            "vector_exact": lambda i: mx.fast.scaled_dot_product_attention(
                qs[i], ks[i][:, :, : pos + 1], vs[i][:, :, : pos + 1], scale=0.088),
        }
        for way, fn in ways.items():
            mx.eval([fn(i) for i in range(LAYERS)])  # warm: kernel JIT
        row = {}
        for way, fn in ways.items():
            samples = []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                mx.eval([fn(i) for i in range(LAYERS)])
                samples.append(time.perf_counter() - t0)
            row[way] = round(1e3 * float(np.median(samples)), 3)
        timing[f"rows_{B}"] = row
        print(f"{B} rows, ms per {LAYERS} layers (median of {REPEATS}):", json.dumps(row), flush=True)
        ours, mlx_masked = ways["kernel"](0).astype(mx.float32), ways["masked_sdpa"](0).astype(mx.float32)
        diff = float(mx.abs(ours - mlx_masked).max() / mx.maximum(mx.abs(mlx_masked).max(), 1.0))
        ok = diff <= tolerances[mx.bfloat16]
        print(f"  kernel vs mlx's masked attention, bfloat16, max relative difference: {diff:.4g}", "" if ok else "FAILED", flush=True)
        if not ok:
            failures.append({"against": "mlx masked sdpa", "rows": B, "max_rel_err": diff})

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "decode_attention_check.json").write_text(
            json.dumps({"device": str(mx.default_device()), "mlx": mx.__version__, "correctness": report, "timing": timing}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
