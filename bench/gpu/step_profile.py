"""Where one decode step's time goes, in-process, on any backend (written for the CUDA build on an H200).

    python bench/gpu/step_profile.py MODEL_DIR [--tokens 256] [--out DIR]

Greedy, batch 1, end-of-sequence ids banned so every run decodes `--tokens` tokens. Measured one after
another in one process, twice in alternating order:
  mlx_lm     mlx-lm's own stream_generate (its tok/s figure)
  bare       the model's forward alone in the engine's pipelined loop (build step N+1, then read step N)
  bare_kv    the same with mlx-lm's single-sequence KVCache instead of the batch cache (no mask)
  bare_stream  bare on a stream of its own, as mlx-lm's generate does
  hooked     the same through DecodeBatch: layer hooks installed, nothing steered or captured
  steer      + one add intervention on every layer
  probes     + every layer captured and scored by 8 probes
  compiled*  the same through the compiled decode step (steering/compiled_step.py)
  *_nk       the compiled step with mlx's masked attention instead of steering/decode_attention.py's kernel
For each loop: tok/s and the host seconds per step spent building the graph (before async_eval returns),
which is what bounds the step when it approaches the device time. Then a cProfile of the compiled loop.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

EOS_BAN = (0, 1, 2)
N_PROBES = 8
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--only", default="", help="comma-separated variants to run (default: all)")
    ap.add_argument("--no-profile", action="store_true", help="skip the closing cProfile of the compiled loop")
    args = ap.parse_args()

    import mlx.core as mx
    import numpy as np
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlx_interp.steering.generation import steering_session
    from mlx_interp.steering.interventions import Intervention
    from mlx_interp.steering.model import load_model

    lm = load_model(args.model, dtype="native", progress=False)
    tok = lm.tokenizer
    prompt = tok.encode(PROMPT)
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    steer = Intervention("bench", dirs, alpha=0.5)
    probe_w = mx.array(rng.standard_normal((lm.num_layers, lm.hidden_size, N_PROBES)).astype(np.float32) / 60)
    ban = mx.array([0.0 if i not in EOS_BAN else -1e9 for i in range(int(lm.config.get("vocab_size", 49152)))])

    def mlx_lm_run() -> dict:
        proc = [lambda toks, logits: logits + ban.astype(logits.dtype)]
        last = None
        for last in stream_generate(lm.model, tok, prompt, max_tokens=args.tokens, sampler=make_sampler(0.0), logits_processors=proc):
            pass
        return {"tok_s": last.generation_tps, "tokens": last.generation_tokens}

    def pipelined(step, first_logits) -> dict:
        toks = mx.argmax(first_logits + ban, axis=-1)
        mx.async_eval(toks)
        host, t0 = 0.0, time.perf_counter()
        seen = []
        for _ in range(args.tokens):
            h0 = time.perf_counter()
            logits = step(toks)
            nxt = mx.argmax(logits + ban, axis=-1)
            mx.async_eval(nxt)
            host += time.perf_counter() - h0
            seen += toks.tolist()
            toks = nxt
        seen += toks.tolist()
        wall = time.perf_counter() - t0
        return {"tok_s": args.tokens / wall, "host_ms_per_step": 1e3 * host / args.tokens, "wall_ms_per_step": 1e3 * wall / args.tokens, "_tokens": seen}

    def bare_run() -> dict:
        from mlx_lm.models.cache import BatchKVCache, make_prompt_cache

        cache = make_prompt_cache(lm.model)
        first = lm.model(mx.array([prompt]), cache=cache)[:, -1, :]
        cache = [BatchKVCache.merge([c]) for c in cache]
        return pipelined(lambda t: lm.model(t[:, None], cache=cache)[:, -1, :], first)

    def bare_kv_run() -> dict:
        from mlx_lm.models.cache import make_prompt_cache

        cache = make_prompt_cache(lm.model)
        first = lm.model(mx.array([prompt]), cache=cache)[:, -1, :]
        return pipelined(lambda t: lm.model(t[:, None], cache=cache)[:, -1, :], first)

    def bare_stream_run() -> dict:
        with mx.stream(mx.new_stream(mx.default_device())):
            return bare_run()

    def hooked_run(interventions=(), capture=False, compiled=False) -> dict:
        with steering_session(lm, capture_layers=None if capture else (), compiled=compiled) as batch:
            pre = batch.prefill(prompt, interventions)
            batch.add(0, pre, interventions)

            def step(t):
                logits, hidden = batch.step(t, capture=capture)
                if hidden is not None:
                    scores = mx.sigmoid(mx.einsum("bld,ldp->blp", hidden.astype(mx.float32), probe_w))
                    mx.async_eval(scores)
                return logits

            return pipelined(step, pre.logits[None] if pre.logits.ndim == 1 else pre.logits)

    def without_kernel(run):
        """The compiled step with mlx's masked attention fallback instead of steering/decode_attention.py's kernel."""
        def wrapped():
            import os

            os.environ["MLX_INTERP_DECODE_KERNEL"] = "0"
            try:
                return run()
            finally:
                os.environ.pop("MLX_INTERP_DECODE_KERNEL")
        return wrapped

    variants = {
        "mlx_lm": mlx_lm_run,
        "bare": bare_run,
        "bare_kv": bare_kv_run,
        "bare_stream": bare_stream_run,
        "hooked": hooked_run,
        "steer": lambda: hooked_run((steer,)),
        "probes": lambda: hooked_run((), True),
        "compiled": lambda: hooked_run(compiled=True),
        "compiled_steer": lambda: hooked_run((steer,), compiled=True),
        "compiled_probes": lambda: hooked_run((), True, compiled=True),
        "compiled_both": lambda: hooked_run((steer,), True, compiled=True),
        "compiled_nk": without_kernel(lambda: hooked_run(compiled=True)),
        "compiled_both_nk": without_kernel(lambda: hooked_run((steer,), True, compiled=True)),
    }
    if args.only:
        unknown = set(args.only.split(",")) - set(variants)
        if unknown:
            ap.error(f"unknown variants {sorted(unknown)}; known: {', '.join(variants)}")
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    info = {"device": str(mx.default_device()), "mlx": mx.__version__, "model": args.model, "tokens": args.tokens}
    print(json.dumps(info), flush=True)
    results: dict[str, list] = {k: [] for k in variants}
    variants.get("mlx_lm", mlx_lm_run)()  # warm-up: kernels, allocator; then each variant once (compiles, kernel JIT)
    warm = {}
    for name, fn in variants.items():
        t0 = time.perf_counter()
        fn()
        warm[name] = round(time.perf_counter() - t0, 2)
    print("first run seconds (compile and kernel JIT included):", json.dumps(warm), flush=True)
    for rep in range(args.reps):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            r = variants[name]()
            results[name].append(r)
            print(rep, name, json.dumps({k: v for k, v in r.items() if k != "_tokens"}), flush=True)
    same = {}
    for a, b in ((a, b) for a, b in (("hooked", "compiled"), ("steer", "compiled_steer"), ("probes", "compiled_probes"), ("bare", "compiled"),
                                                       ("compiled_nk", "compiled"), ("bare_kv", "compiled"), ("compiled_both_nk", "compiled_both")) if a in results and b in results):
        ta, tb = results[a][0]["_tokens"], results[b][0]["_tokens"]
        same[f"{a}=={b}"] = ta == tb if ta == tb else next(i for i, (x, y) in enumerate(zip(ta, tb)) if x != y)
    print("same greedy tokens (True, or the first step that differs):", json.dumps(same), flush=True)
    for v in results.values():
        for r in v:
            r.pop("_tokens", None)
    summary = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    print(json.dumps(summary, indent=1), flush=True)

    if args.no_profile:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "step_profile.json").write_text(json.dumps({"info": info, "same_tokens": same, "runs": results, "median": summary}, indent=1))
        return 0
    prof = cProfile.Profile()
    prof.enable()
    hooked_run(compiled=True)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
    print(buf.getvalue()[:8000], flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step_profile.json").write_text(json.dumps({"info": info, "same_tokens": same, "runs": results, "median": summary}, indent=1))
        (args.out / "step_profile_cprofile.txt").write_text(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
