# How the layout of a quantized matmul's input picks mlx's CUDA kernel, and what that costs a decode step.
# A decode batch reaches every Linear as x of shape (rows, 1, hidden): mlx sees M=1 per batch entry.
# The same product as (rows, hidden) is one M=rows matmul. Rows 2-7 as one matmul may still go to the
# one-row kernel (qmv) once per row; padded to 8 rows they take the matmul kernel.
# Part 1: one 7B-shape layer's four products x 28 (as qmm_shapes.py), ms per step, per layout.
# Part 2: the whole random-weight model's decode forward (mlx-lm's BatchKVCache), ms per step, with
#         QuantizedLinear as shipped and with the input flattened (and padded to 8 rows below 8).
# usage: python3 qmm_layout.py MODEL_DIR [--rows 1,2,4,8,16,32] [--json out.json]
import argparse
import json
import time

import mlx.core as mx
import mlx.nn as nn

from qmm_shapes import HIDDEN, INTER, LAYERS, SHAPES, GROUP, BITS, weights

PAD_TO = 8


def flat(x, wq, s, b, pad):
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k)
    m = x2.shape[0]
    if pad and 1 < m < PAD_TO:
        x2 = mx.concatenate([x2, mx.zeros((PAD_TO - m, k), x2.dtype)])
    y = mx.quantized_matmul(x2, wq, s, b, transpose=True, group_size=GROUP, bits=BITS)
    return y[:m].reshape(*lead, -1)


def layer_step(wts, x3, xi3, layout):
    outs = []
    for name, (n, k) in SHAPES.items():
        x = x3 if k == HIDDEN else xi3
        wq, s, b = wts[name]
        if layout == "rows,1,hidden":
            y = mx.quantized_matmul(x, wq, s, b, transpose=True, group_size=GROUP, bits=BITS)
        else:
            y = flat(x, wq, s, b, pad=layout == "flat+pad8")
        outs.append(y[..., :1].sum())
    return sum(outs)


def timed(fn, reps):
    for _ in range(3):
        mx.eval(fn())
    mx.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        mx.eval(fn())
    mx.synchronize()
    return (time.perf_counter() - t0) / reps * 1000


def patched_call(pad):
    def call(self, x):  # the benchmark's model is 4-bit, group 64, affine (build_model.py)
        assert (self.group_size, self.bits, getattr(self, "mode", "affine")) == (GROUP, BITS, "affine")
        y = flat(x, self["weight"], self["scales"], self.get("biases"), pad=pad)
        return y + self["bias"] if "bias" in self else y
    return call


def model_part(path, rows_list, reps, rounds=5):
    """Whole decode forwards; the variants alternate round by round so machine noise falls on all alike."""
    from mlx_lm import load
    from mlx_lm.models.cache import BatchKVCache

    model, _ = load(path)
    calls = {"shipped": nn.QuantizedLinear.__call__, "flat": patched_call(False), "flat+pad8": patched_call(True)}
    out = []
    for rows in rows_list:
        times = {k: [] for k in calls}
        for r in range(rounds):
            for how in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
                nn.QuantizedLinear.__call__ = calls[how]
                cache = [BatchKVCache([0] * rows) for _ in model.layers]
                mx.eval(model(mx.random.randint(0, 1000, (rows, 32)), cache=cache))
                tok = mx.zeros((rows, 1), mx.int32)
                times[how].append(timed(lambda: mx.argmax(model(tok, cache=cache)[:, -1], axis=-1), reps))
        nn.QuantizedLinear.__call__ = calls["shipped"]
        row = {"rows": rows, **{k: sorted(v)[len(v) // 2] for k, v in times.items()}, "all": times}
        out.append(row)
        print(f"model rows {rows:3d} (median of {rounds}): " + "  ".join(f"{k} {row[k]:7.2f} ms" for k in calls), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rows", default="1,2,4,8,16,32")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--model-only", action="store_true")
    args = ap.parse_args()
    rows_list = [int(r) for r in args.rows.split(",")]
    print(f"device {mx.default_device()} mlx {mx.__version__}", flush=True)
    wts = weights() if not args.model_only else None
    layers = []
    for rows in rows_list if not args.model_only else []:
        x3 = (mx.random.normal((rows, 1, HIDDEN)) * 0.1).astype(mx.bfloat16)
        xi3 = (mx.random.normal((rows, 1, INTER)) * 0.1).astype(mx.bfloat16)
        row = {"rows": rows}
        for layout in ("rows,1,hidden", "flat", "flat+pad8"):
            row[layout] = timed(lambda lay=layout: [layer_step(wts, x3, xi3, lay) for _ in range(LAYERS)], args.reps)
        layers.append(row)
        print(f"layers rows {rows:3d}: " + "  ".join(f"{k} {row[k]:8.2f} ms" for k in ("rows,1,hidden", "flat", "flat+pad8")),
              flush=True)
    models = model_part(args.model, rows_list, args.reps)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(mx.default_device()), "mlx": mx.__version__, "layers": layers, "model": models}, f, indent=1)


if __name__ == "__main__":
    main()
