"""Probe benchmark: what monitoring costs per decode step, and how long training takes.

1. ProbeBank.scores for P probes x every layer (one batched matmul) against
   scoring the same probes one (probe, layer) at a time in mlx, and against
   the numpy reference, for batch sizes 1..8.
2. A real decode step of the model with capture of every layer, with and
   without the probe scores evaluated in the same mx.eval. Steps alternate
   between the two modes so load from other processes falls on both alike.
3. (--training) train_probe on N x L x D synthetic activations with the
   default settings (5 grouped folds, shuffled baseline, 1000 bootstraps).

Run: python bench/bench_probes.py [--model default] [--probes 8] [--steps 24] [--training]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import mlx_interp.steering  # noqa: E402,F401  (BLAS before mlx)

BATCH_SIZES = (1, 2, 4, 8)
MICRO_REPEATS = 100
PROMPT = "Write a short note about the weather in the mountains and what to pack for a hike."


def synthetic_probes(count: int, num_layers: int, hidden: int, seed: int = 0):
    import numpy as np

    from mlx_interp.probes.probe import Probe

    rng = np.random.default_rng(seed)
    probes = []
    for i in range(count):
        layers = tuple(range(num_layers))
        K = len(layers)
        meta = {"name": f"p{i}", "labels": ["no", "yes"], "method": "logistic", "best_layer": layers[K // 2],
                "threshold": 0.5, "hidden_size": hidden, "num_layers": num_layers}
        probes.append(Probe(f"p{i}", layers, rng.normal(size=(K, hidden)) / hidden**0.5, rng.normal(size=K),
                            rng.normal(size=(K, hidden)), rng.uniform(0.5, 2, size=(K, hidden)), meta))
    return probes


def median_ms(fn, repeats: int) -> float:
    fn()  # warm up (graph building, allocation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_scoring(n_probes: int, num_layers: int, hidden: int) -> dict[int, float]:
    import mlx.core as mx
    import numpy as np

    from mlx_interp.probes.scoring import ProbeBank

    probes = synthetic_probes(n_probes, num_layers, hidden)
    bank = ProbeBank(probes, num_layers, hidden)
    # the per-(probe, layer) alternative, folded the same way, as separate small matmuls
    folded = [[(bank.W[l, :, j], bank.b[l, j]) for l in range(num_layers)] for j in range(n_probes)]
    mx.eval(bank.W, bank.b, folded)
    print(f"\n[1] scoring {n_probes} probes x {num_layers} layers x hidden {hidden}: median ms per call")
    print(f"{'batch':>5} {'ProbeBank':>10} {'per (probe,layer)':>18} {'numpy ref':>10}")
    bank_ms = {}
    for B in BATCH_SIZES:
        h = mx.random.normal((B, num_layers, hidden))
        h_np = np.array(h)
        mx.eval(h)
        t_bank = median_ms(lambda: mx.eval(bank.scores(h)), MICRO_REPEATS)
        t_loop = median_ms(
            lambda: mx.eval([mx.sigmoid(h[:, l, :] @ w + b) for per in folded for l, (w, b) in enumerate(per)]),
            max(MICRO_REPEATS // 5, 5),
        )
        t_np = median_ms(lambda: [p.score_numpy(h_np) for p in probes], max(MICRO_REPEATS // 5, 5))
        bank_ms[B] = t_bank
        print(f"{B:>5} {t_bank:>10.3f} {t_loop:>18.3f} {t_np:>10.3f}")
    return bank_ms


def bench_decode(model: str, n_probes: int, steps: int) -> None:
    import mlx.core as mx

    from mlx_interp.probes.scoring import ProbeBank
    from mlx_interp.steering.capture import encode
    from mlx_interp.steering.generation import steering_session
    from mlx_interp.steering.model import load_model

    lm = load_model(model, progress=False)
    bank = ProbeBank(synthetic_probes(n_probes, lm.num_layers, lm.hidden_size), lm.num_layers, lm.hidden_size)
    mx.eval(bank.W, bank.b)
    tokens = encode(lm, PROMPT, chat=True)
    print(f"\n[2] decode step of {lm.model_id} ({lm.num_layers} layers, hidden {lm.hidden_size}, {lm.dtype}), "
          f"capture of every layer; median ms per step over {steps} steps per mode")
    print(f"{'batch':>5} {'step':>9} {'step+scores':>12} {'overhead':>9}")
    for B in BATCH_SIZES:
        with steering_session(lm) as batch:
            for i in range(B):
                batch.add(i, batch.prefill(tokens))
            plain, scored = [], []
            next_tokens = [tokens[-1]] * B
            for s in range(2 * steps + 2):
                with_scores = s % 2 == 1
                t0 = time.perf_counter()
                logits, hidden = batch.step(next_tokens, capture=True)
                if with_scores:
                    mx.eval(logits, bank.scores(hidden))
                else:
                    mx.eval(logits, hidden)
                dt = time.perf_counter() - t0
                next_tokens = mx.argmax(logits, axis=-1).tolist()
                if s >= 2:  # the first pair warms up
                    (scored if with_scores else plain).append(dt)
        p, q = statistics.median(plain) * 1e3, statistics.median(scored) * 1e3
        print(f"{B:>5} {p:>9.2f} {q:>12.2f} {100 * (q - p) / p:>8.1f}%")


def bench_training(n: int, num_layers: int, hidden: int) -> None:
    import numpy as np

    from mlx_interp.probes.training import train_probe

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, num_layers, hidden)).astype(np.float32)
    y = np.tile([0, 1], n // 2)
    X[:, num_layers // 2, :8] += y[:, None]
    t0 = time.perf_counter()
    probe = train_probe(X, y, np.arange(n) // 2, "bench", progress=True)
    dt = time.perf_counter() - t0
    meta = probe.metadata
    print(f"\n[3] train_probe {n} x {num_layers} layers x {hidden}: {dt:.1f} s "
          f"({meta['folds']} folds, {meta['n_shuffles']} shuffles, {meta['n_bootstrap']} bootstraps); "
          f"best layer {probe.best_layer} (planted at {num_layers // 2})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--layers", type=int, default=30, help="layers for the synthetic scoring benchmark")
    parser.add_argument("--hidden", type=int, default=576, help="hidden size for the synthetic scoring benchmark")
    parser.add_argument("--steps", type=int, default=24, help="decode steps per mode and batch size")
    parser.add_argument("--no-decode", action="store_true", help="skip the real-model decode comparison")
    parser.add_argument("--training", action="store_true", help="also time training (200 x 30 x 576 by default)")
    parser.add_argument("--train-examples", type=int, default=200)
    args = parser.parse_args(argv)

    from mlx_interp.steering.backend import blas_choice

    print(f"BLAS: {blas_choice().path or blas_choice().reason}")
    bench_scoring(args.probes, args.layers, args.hidden)
    if not args.no_decode:
        bench_decode(args.model, args.probes, args.steps)
    if args.training:
        bench_training(args.train_examples, args.layers, args.hidden)
    return 0


if __name__ == "__main__":
    sys.exit(main())
