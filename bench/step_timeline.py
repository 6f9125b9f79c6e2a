"""Where one decode step's time goes, and how fast the engine's step loop runs next to mlx-lm's.

Run: python bench/step_timeline.py --model PATH [--batch 1] [--steps 32] [--repeats 5]

Three measurements, all in this one process, the cases interleaved repeat by repeat
(the order rotates) so load from other processes falls on every case alike:

1. Timeline (synchronous: every phase is finished before the next starts, so each
   is timed alone), per case:
     build   host: the Python that builds the step's lazy graph (DecodeBatch.step with
             its hooks, steering terms and capture, the finite check, the probe bank's
             scores, sample())
     device  mx.eval of that graph: the forward pass itself
     read    tokens, finite flags and probe scores to the host (tolist / numpy)
     rows    detokenizing and stop-string matching for each row (RowState's work)
     sse     encoding one SSE chunk per row (JSON, with probe readings when probed)
   Cases: `mlx-lm` (mlx_lm's generate_step loop: model, logsumexp, argmax), `plain`
   (the engine's step, nothing steered or read), `steered` (one add vector on every
   layer), `probed` (8 probes read at every layer, every token), `steered+probed`.
2. Pipelined decode rate (tokens/s per row): the engine's order, the next step launched
   with mx.async_eval before the previous one's tokens are read and handled, against
   mlx_lm.generate_step's own loop on the same weights.
3. Paired step ratios (--pairs N): steps alternate between two configurations
   over two batches with the same prompts, so every pair sees the same load; the
   median of the per-pair ratios and its spread are reported. Pairs: steered+probed
   against plain (the issue's 3% target) and, on Linux CPU with the gemv shim loaded,
   the engine with one-row products routed to sgemv against OpenBLAS's sgemm.

`--json FILE` writes every number. Nothing here is a test: read the spreads and
`uptime` (printed at the start and the end) before trusting a ratio.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import mlx_interp.steering  # noqa: E402,F401  (BLAS before mlx)

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
PHASES = ("build", "device", "read", "rows", "sse")
CASES = ("mlx-lm", "plain", "steered", "probed", "steered+probed")
N_PROBES = 8
STEER_ALPHA = 0.5


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


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


def gemv_shim():
    """The loaded gemv shim (steering/gemv_shim.c), or None."""
    from mlx_interp.steering.backend import blas_choice

    path = blas_choice().gemv
    return ctypes.CDLL(path) if path else None


class Rig:
    """One loaded model, a steering session, and batches for each case over the same prompts."""

    def __init__(self, model: str, batch: int):
        import numpy as np

        from mlx_interp.gateway.sampling import RowSampler, SamplingParams
        from mlx_interp.probes.scoring import ProbeBank
        from mlx_interp.steering.capture import encode
        from mlx_interp.steering.interventions import Intervention
        from mlx_interp.steering.model import load_model

        self.lm = load_model(model, progress=False)
        self.batch_size = batch
        rng = np.random.default_rng(0)
        dirs = rng.standard_normal((self.lm.num_layers, self.lm.hidden_size)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        self.vector = Intervention("bench", dirs, alpha=STEER_ALPHA)
        self.bank = ProbeBank(synthetic_probes(N_PROBES, self.lm.num_layers, self.lm.hidden_size),
                              self.lm.num_layers, self.lm.hidden_size)
        self.prompt = encode(self.lm, PROMPT, chat=True)
        self.eos = set(self.lm.tokenizer.eos_token_ids)
        self.samplers = [RowSampler(SamplingParams(), self._vocab()) for _ in range(batch)]

    def _vocab(self) -> int:
        args = getattr(self.lm.model, "args", None)
        return int(getattr(args, "vocab_size", None) or self.lm.config["vocab_size"])


# -- the engine's step, phase by phase ---------------------------------------------------------


class EngineCase:
    """A DecodeBatch of `batch` rows with this case's steering and capture, stepped like gateway/engine.py."""

    def __init__(self, rig: Rig, session, steered: bool, probed: bool):
        from mlx_interp.steering.generation import DecodeBatch

        # A batch of its own on the session's hook and compiled step (what the server decodes with;
        # before 2026-11-30 evening these cases decoded uncompiled): cases can alternate step by step.
        self.rig, self.batch, self.probed = rig, DecodeBatch(rig.lm, session.hook, compiled=session.compiled), probed
        self.ivs = (rig.vector,) if steered else ()
        self.detoks, self.stops = [], []

    def start(self):
        import mlx.core as mx

        from mlx_interp.gateway.stops import StopMatcher

        b = self.batch
        b.remove(b.uids)
        logits = []
        for i in range(self.rig.batch_size):
            pre = b.prefill(self.rig.prompt, self.ivs)
            b.add(("row", i), pre, self.ivs)
            logits.append(pre.logits)
        self.tokens = mx.argmax(mx.stack(logits), axis=-1)
        mx.eval(self.tokens)
        self.detoks = [self.rig.lm.tokenizer.detokenizer for _ in range(self.rig.batch_size)]
        for d in self.detoks:
            d.reset()
        self.stops = [StopMatcher(["\n\n\n\n"]) for _ in range(self.rig.batch_size)]

    def build(self, tokens):
        from mlx_interp.gateway.numerics import finite_rows
        from mlx_interp.gateway.sampling import sample

        logits, hidden = self.batch.step(tokens, capture=self.probed)
        finite = finite_rows(logits)
        scores = self.rig.bank.scores(hidden) if self.probed else None
        sampled = sample(logits, self.rig.samplers)
        return sampled.tokens, finite, scores

    def read(self, out):
        import numpy as np

        tokens, finite, scores = out
        return tokens.tolist(), finite.tolist(), (np.array(scores) if scores is not None else None)

    def rows(self, host):
        toks, _, scores = host
        texts = []
        for i, t in enumerate(toks):
            self.detoks[i].add_token(t)
            text, _ = self.stops[i].feed(self.detoks[i].last_segment)
            texts.append((text, None if scores is None else scores[i].T))
        return texts

    def sse(self, texts):
        from mlx_interp.gateway.jsonio import dumps

        out = []
        for i, (text, reading) in enumerate(texts):
            item = {"index": i, "delta": {"content": text}, "finish_reason": None}
            if reading is not None:  # what a token probe's live reading costs in the chunk (best layer per probe)
                item["probes"] = {f"p{j}": {"score": float(reading[j].max()), "layer": int(reading[j].argmax())}
                                  for j in range(reading.shape[0])}
            out.append(b"data: " + dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk",
                                          "created": 0, "model": "bench", "choices": [item]}) + b"\n\n")
        return out


class MlxLmCase:
    """mlx_lm.generate_step's step: the model, logsumexp, argmax (the phases it has: build, device, read, rows)."""

    def __init__(self, rig: Rig):
        self.rig = rig

    def start(self):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        m = self.rig.lm.model
        self.cache = make_prompt_cache(m)
        rows = [self.rig.prompt] * self.rig.batch_size
        with bare(self.rig):
            out = m(mx.array(rows), cache=self.cache)
        self.tokens = mx.argmax(out[:, -1], axis=-1)
        mx.eval(self.tokens, [c.state for c in self.cache])
        self.detoks = [self.rig.lm.tokenizer.detokenizer for _ in range(self.rig.batch_size)]
        for d in self.detoks:
            d.reset()

    def build(self, tokens):
        import mlx.core as mx

        with bare(self.rig):
            logits = self.rig.lm.model(tokens[:, None], cache=self.cache)[:, -1, :]
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        return (mx.argmax(logprobs, axis=-1),)

    def read(self, out):
        return (out[0].tolist(),)

    def rows(self, host):
        texts = []
        for i, t in enumerate(host[0]):
            self.detoks[i].add_token(t)
            texts.append(self.detoks[i].last_segment)
        return texts

    def sse(self, texts):
        return texts


def timeline(case, steps: int) -> dict:
    """Synchronous: each phase of each step timed alone; medians over the steps, in ms."""
    import mlx.core as mx

    case.start()
    tokens = case.tokens
    times = {p: [] for p in PHASES}
    for _ in range(steps):
        t0 = time.perf_counter()
        out = case.build(tokens)
        t1 = time.perf_counter()
        mx.eval(*[a for a in out if a is not None])
        t2 = time.perf_counter()
        host = case.read(out)
        t3 = time.perf_counter()
        texts = case.rows(host)
        t4 = time.perf_counter()
        case.sse(texts)
        t5 = time.perf_counter()
        for p, a, b in zip(PHASES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5)):
            times[p].append((b - a) * 1e3)
        tokens = out[0]
    res = {p: statistics.median(v) for p, v in times.items()}
    res["total"] = sum(res.values())
    return res


def pipelined(case, steps: int) -> float:
    """Tokens/s per row with the engine's overlap: step t+1 launched (async_eval) before step t is read."""
    import mlx.core as mx

    case.start()
    out = case.build(case.tokens)
    mx.async_eval(*[a for a in out if a is not None])
    t0 = time.perf_counter()
    for _ in range(steps):
        cur = out
        out = case.build(cur[0])
        mx.async_eval(*[a for a in out if a is not None])
        case.sse(case.rows(case.read(cur)))
    mx.eval(*[a for a in out if a is not None])
    return steps / (time.perf_counter() - t0)


def mlx_lm_rate(rig: Rig, steps: int) -> float:
    """mlx_lm.generate_step itself (batch 1 only): tokens/s between the first and the last token."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    detok = rig.lm.tokenizer.detokenizer
    detok.reset()
    stamps = []
    for n, (tok, _) in enumerate(generate_step(mx.array(rig.prompt), rig.lm.model, max_tokens=steps + 1)):
        detok.add_token(int(tok))
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def paired(a, b, steps: int, switch=None) -> list[float]:
    """Alternate steps of case a and case b (b first on odd steps); per-pair ratio b/a of the step's wall time.

    `switch(which)` is called before each step when the two differ by a process-wide switch rather than by batch.
    """
    import mlx.core as mx

    a.start()
    b.start()
    ta, tb = a.tokens, b.tokens
    ratios = []
    for i in range(steps):
        dur = {}
        for which in ((a, b) if i % 2 == 0 else (b, a)):
            if switch is not None:
                switch(which is b)
            t0 = time.perf_counter()
            out = which.build(ta if which is a else tb)
            mx.eval(*[x for x in out if x is not None])
            which.sse(which.rows(which.read(out)))
            dur[which is b] = time.perf_counter() - t0
            if which is a:
                ta = out[0]
            else:
                tb = out[0]
        ratios.append(dur[True] / dur[False])
    if switch is not None:
        switch(True)
    return ratios


def paired_pipelined(a, b, blocks: int, block_steps: int) -> list[float]:
    """Alternate blocks of `block_steps` pipelined steps of a and b (b first in odd blocks); per-pair
    ratio of b's time per step to a's. The server decodes this way: a step's tokens, probe scores
    and SSE are handled on the host while the next step runs, so host work that fits under the
    device's time costs nothing. `paired` (synchronous) counts it all: an upper bound."""
    ratios = []
    for i in range(blocks):
        rate = {}
        for which in ((a, b) if i % 2 == 0 else (b, a)):
            rate[which is b] = pipelined(which, block_steps)
        ratios.append(rate[False] / rate[True])
    return ratios


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="anything load_model takes: a directory, a GGUF file, 'default'")
    ap.add_argument("--batch", type=int, default=1, help="rows per step")
    ap.add_argument("--steps", type=int, default=32, help="decode steps per case per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=64, help="step pairs per paired comparison (0: skip)")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--pairs-only", action="store_true", help="skip the timeline and rates: paired ratios only")
    ap.add_argument("--pipelined-pairs", type=int, default=0,
                    help="pairs of pipelined blocks (the server's loop), each steered/probed case against plain (0: skip)")
    ap.add_argument("--block-steps", type=int, default=16, help="steps per pipelined block")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import mlx.core as mx
    import mlx_lm

    from mlx_interp.steering.backend import blas_choice
    from mlx_interp.steering.generation import steering_session

    print(f"load average at start: {load_avg()}", flush=True)
    rig = Rig(args.model, args.batch)
    blas = blas_choice()
    info = {"model": rig.lm.model_id, "dtype": rig.lm.dtype, "device": str(mx.default_device()),
            "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__, "blas": blas.path, "gemv_shim": blas.gemv,
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "batch": args.batch, "steps": args.steps,
            "repeats": args.repeats}
    print(json.dumps(info), flush=True)
    wanted = [c for c in args.cases.split(",") if c]
    results: dict = {"info": info, "timeline": {c: [] for c in wanted}, "rate": {c: [] for c in wanted},
                     "generate_step": []}
    with steering_session(rig.lm, capture_layers=None) as session:
        cases = {"mlx-lm": MlxLmCase(rig)}
        for name, steered, probed in (("plain", False, False), ("steered", True, False), ("probed", False, True),
                                      ("steered+probed", True, True)):
            cases[name] = EngineCase(rig, session, steered, probed)
        for c in wanted:  # warm up each path once
            timeline(cases[c], 2)
        for r in range(0 if args.pairs_only else args.repeats):
            order = wanted[r % len(wanted):] + wanted[: r % len(wanted)]
            for c in order:
                results["timeline"][c].append(timeline(cases[c], args.steps))
                results["rate"][c].append(pipelined(cases[c], args.steps))
            if args.batch == 1:
                with bare(rig):
                    results["generate_step"].append(mlx_lm_rate(rig, args.steps))
            print(f"repeat {r + 1}/{args.repeats} done, load {load_avg()}", flush=True)

        if args.pairs_only:
            wanted_rows = []
        else:
            wanted_rows = wanted
        print(f"\nTimeline, ms per step (batch {args.batch}; median over steps, then over repeats):")
        print(f"{'case':16}" + "".join(f"{p:>9}" for p in PHASES + ('total',)) + "   pipelined tok/s/row (min..max)")
        for c in wanted_rows:
            row = {p: statistics.median(t[p] for t in results["timeline"][c]) for p in PHASES + ("total",)}
            print(f"{c:16}" + "".join(f"{row[p]:9.2f}" for p in PHASES + ("total",)) + "   " + spread(results["rate"][c]))
        if results["generate_step"]:
            print(f"{'generate_step':16}{'':54}   {spread(results['generate_step'])}  (mlx_lm.generate_step itself)")
            if "plain" in wanted:
                ratios = [p / g for p, g in zip(results["rate"]["plain"], results["generate_step"])]
                print(f"engine plain / generate_step, per repeat: {spread(ratios)}")

        results["paired"] = {}

        def report(key: str, label: str, r: list[float]) -> None:
            results["paired"][key] = r
            lo, hi = median_ci(r)
            print(f"\n{label}: median {statistics.median(r):.4f} "
                  f"(95% CI of the median {lo:.4f}..{hi:.4f}; IQR {_q(r, .25):.4f}..{_q(r, .75):.4f}; {len(r)} pairs)")

        others = [o for o in ("steered+probed", "steered", "probed") if o in wanted and "plain" in wanted]
        for other in others if args.pairs else []:  # each against plain, whichever --cases names
            report(f"{other}/plain", f"paired steps, {other} / plain", paired(cases["plain"], cases[other], args.pairs))
        for other in others if args.pipelined_pairs else []:
            report(f"pipelined {other}/plain", f"pipelined blocks of {args.block_steps} steps, {other} / plain",
                   paired_pipelined(cases["plain"], cases[other], args.pipelined_pairs, args.block_steps))
        if args.pairs:
            from mlx_interp.steering.backend import default_device_kind

            shim = gemv_shim() if default_device_kind() == "cpu" else None  # a GPU's matmuls never reach cblas
            if shim is not None and "plain" in wanted:
                r = paired(cases["plain"], EngineCase(rig, session, False, False), args.pairs,
                           switch=lambda on: shim.mlx_interp_gemv_shim_enable(0 if on else 1))
                report("sgemm/gemv", "paired steps, plain with sgemm only / with the gemv shim", r)
    print(f"load average at end: {load_avg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def median_ci(values, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the median."""
    import numpy as np

    rng = np.random.default_rng(seed)
    v = np.asarray(values)
    meds = np.median(rng.choice(v, size=(rounds, len(v)), replace=True), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


def _q(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


@contextmanager
def bare(rig):
    """mlx-lm's own loop runs on the bare model: the session's layer hooks are lifted while it builds its graph."""
    from mlx_interp.steering.hooks import _HOOK_ATTR
    from mlx_interp.steering.layers import decoder_layers

    saved = [(layer, type(layer)) for layer in decoder_layers(rig.lm.model) if _HOOK_ATTR in layer.__dict__]
    for layer, cls in saved:
        layer.__class__ = cls.__mro__[1]  # the hooked class is a direct subclass of the original
    try:
        yield
    finally:
        for layer, cls in saved:
            layer.__class__ = cls


if __name__ == "__main__":
    sys.exit(main())
