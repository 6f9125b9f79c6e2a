# Time one 7B-shape decode layer's matmuls at 4-bit g64 for batch sizes 1..64 on the GPU, three ways:
#   qmm:       mx.quantized_matmul on the packed weights (what every quantized Linear does)
#   deq+mm:    mx.dequantize to bfloat16 inside the same graph, then a plain matmul (cuBLAS), the
#              bfloat16 copy dropped after use (no resident memory beyond one weight at a time)
#   bf16 mm:   a resident bfloat16 copy (4x the memory; the bound a dequantized path can reach)
# A "step" is the layer's four products (fused q/k/v, o, fused gate/up, down) x 28 layers, as
# mlx-interp runs them with fused projections. Prints ms per step; the weight bytes read by qmm
# are 3.5 GB, so 4.8 TB/s allows ~0.75 ms.
# usage: python3 qmm_shapes.py [--rows 1,2,4,8,16,32,64] [--reps 20] [--json out.json]
import argparse
import json
import time

import mlx.core as mx

HIDDEN, INTER, KV, LAYERS, GROUP, BITS = 3584, 18944, 512, 28, 64, 4
SHAPES = {"qkv": (HIDDEN + 2 * KV, HIDDEN), "o": (HIDDEN, HIDDEN), "gate_up": (2 * INTER, HIDDEN), "down": (HIDDEN, INTER)}


def weights():
    out = {}
    for name, (n, k) in SHAPES.items():
        w = (mx.random.normal((n, k)) * 0.02).astype(mx.bfloat16)
        q = mx.quantize(w, group_size=GROUP, bits=BITS)
        mx.eval(q)
        out[name] = q
    return out


def step_fn(ws, how, dense):
    def run(x, xi):
        outs = []
        for name, (n, k) in SHAPES.items():
            xin = x if k == HIDDEN else xi
            wq, s, b = ws[name]
            if how == "qmm":
                y = mx.quantized_matmul(xin, wq, s, b, transpose=True, group_size=GROUP, bits=BITS)
            elif how == "deq+mm":
                y = xin @ mx.dequantize(wq, s, b, group_size=GROUP, bits=BITS).T
            else:
                y = xin @ dense[name].T
            outs.append(y[..., :1].sum())
        return sum(outs)
    return run


def time_step(fn, x, xi, reps):
    # LAYERS layers share one set of weights here: the same bytes are read 28 times, as in a model whose
    # layers are different weights of the same shapes (3.5 GB per step does not fit any cache).
    for _ in range(3):
        mx.eval([fn(x, xi) for _ in range(LAYERS)])
    mx.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        mx.eval([fn(x, xi) for _ in range(LAYERS)])
    mx.synchronize()
    return (time.perf_counter() - t0) / reps * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,2,4,8,16,32,64")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    ws = weights()
    dense = {k: mx.dequantize(*v, group_size=GROUP, bits=BITS) for k, v in ws.items()}
    mx.eval(dense)
    results = []
    print(f"device {mx.default_device()} mlx {mx.__version__}", flush=True)
    for rows in [int(r) for r in args.rows.split(",")]:
        x = (mx.random.normal((rows, HIDDEN)) * 0.1).astype(mx.bfloat16)
        xi = (mx.random.normal((rows, INTER)) * 0.1).astype(mx.bfloat16)
        row = {"rows": rows}
        for how in ("qmm", "deq+mm", "bf16 mm"):
            row[how] = time_step(step_fn(ws, how, dense), x, xi, args.reps)
        results.append(row)
        print(f"rows {rows:3d}: " + "  ".join(f"{k} {row[k]:8.2f} ms" for k in ("qmm", "deq+mm", "bf16 mm")), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(mx.default_device()), "mlx": mx.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
