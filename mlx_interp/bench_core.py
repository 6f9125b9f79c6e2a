"""Core benchmark: prompt and decode throughput with and without steering and capture.

Cases (all on the same model):
  native-ref   (a) checkpoint weights (4-bit) with mlx's reference BLAS, plain mlx-lm forward
  default      (b) the default configuration (float32 + OpenBLAS on Linux CPU), plain mlx-lm forward
  hooked          (b) with the hooks installed but nothing to do: the price of the hook itself
  add-all      (c) (b) + one `add` intervention on every layer
  capture-all  (d) (b) + capture of every layer's last token
  add+capture  (e) (c) + (d)

BLAS is chosen when mlx is imported, so each configuration of environment
variables runs in its own worker process; the parent imports no mlx. The parent
interleaves the repeats (case 1, case 2, ..., case 1, case 2, ...) so that load
from other processes falls on every case alike, and reports medians.

Run: python bench/bench_core.py [--model default] [--tokens 32] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PROMPT_TOKENS = 64  # prompt length for the prompt-throughput measurement
CONTEXT_TOKENS = 16  # prompt length before each decode run
DECODE_TOKENS = 32  # decode steps per run
BATCH_SIZES = (1, 4)
REPEATS = 5
QUICK_REPEATS = 2
QUICK_TOKENS = 8
STEER_ALPHA = 0.5  # small enough to keep the text sane; the cost does not depend on it
OVERHEAD_TARGETS = {"add-all": 0.03, "capture-all": 0.05}  # decode-speed cost allowed (issue requirement)


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    worker: str  # which worker process runs it (one per environment)
    hooked: bool = False
    steer: bool = False
    capture: bool = False


WORKER_ENVS = {
    "native-ref": {"MLX_INTERP_BLAS": "reference", "MLX_INTERP_DTYPE": "native"},
    "default": {},
}

CASES = (
    Case("native-ref", "(a) native 4-bit, reference BLAS", "native-ref"),
    Case("default", "(b) float32 + OpenBLAS (default)", "default"),
    Case("hooked", "    (b) + hooks, no intervention", "default", hooked=True),
    Case("add-all", "(c) (b) + add on every layer", "default", hooked=True, steer=True),
    Case("capture-all", "(d) (b) + capture every layer", "default", hooked=True, capture=True),
    Case("add+capture", "(e) (c) + (d)", "default", hooked=True, steer=True, capture=True),
)
CASES_BY_NAME = {c.name: c for c in CASES}


# --------------------------------------------------------------------------- worker side
class Worker:
    """Holds one loaded model and measures cases on request (runs in its own process)."""

    def __init__(self, model: str):
        import mlx_interp.steering  # noqa: F401  (BLAS before mlx)
        from mlx_interp.steering.backend import blas_choice
        from mlx_interp.steering.model import load_model

        self.lm = load_model(model, progress=False)
        self.blas = blas_choice()
        import numpy as np

        rng = np.random.default_rng(0)
        directions = rng.standard_normal((self.lm.num_layers, self.lm.hidden_size)).astype(np.float32)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        from mlx_interp.steering.interventions import Intervention

        self.intervention = Intervention("bench", directions, alpha=STEER_ALPHA)
        vocab = self.lm.config.get("vocab_size", 1000)
        # Fixed pseudo-random prompts of PROMPT_TOKENS ids; the cost does not depend on the text.
        self.prompt = rng.integers(100, min(vocab, 20000), PROMPT_TOKENS).tolist()
        self.contexts = [rng.integers(100, min(vocab, 20000), CONTEXT_TOKENS).tolist() for _ in range(max(BATCH_SIZES))]

    def describe(self) -> dict:
        import mlx.core as mx
        import platform

        return {
            "model": self.lm.model_id,
            "dtype": self.lm.dtype,
            "blas": self.blas.path or f"mlx reference ({self.blas.reason})",
            "device": str(mx.default_device()),
            "mlx": mx.__version__,
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        }

    def measure(self, case: Case, kind: str, batch: int, tokens: int) -> dict:
        """Wall seconds, and this process's CPU seconds (less sensitive to other processes' load)."""
        if kind == "prompt":
            (seconds, cpu), count = self._prompt(case), PROMPT_TOKENS
        else:
            (seconds, cpu), count = self._decode(case, batch, tokens), tokens * batch
        return {"tokens": count, "seconds": seconds, "cpu_seconds": cpu}

    # Plain mlx-lm: no hooks at all.
    def _plain_prefill(self, prompt):
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        cache = make_prompt_cache(self.lm.model)
        logits = self.lm.model(mx.array([prompt]), cache=cache)[0, -1]
        mx.eval(logits, [c.state for c in cache])
        return logits, cache

    def _prompt(self, case: Case) -> tuple[float, float]:
        import mlx.core as mx

        prompt = self.prompt
        if not case.hooked:
            with Timer() as t:
                self._plain_prefill(prompt)
            return t.wall, t.cpu
        with self._session(case) as batch:
            with Timer() as t:
                pre = batch.prefill(prompt, self._interventions(case))
                mx.eval(pre.logits, pre.hidden_last if pre.hidden_last is not None else [])
            return t.wall, t.cpu

    def _decode(self, case: Case, batch_size: int, tokens: int) -> tuple[float, float]:
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache

        prompts = self.contexts[:batch_size]
        if not case.hooked:
            firsts, caches = zip(*(self._plain_prefill(p) for p in prompts))
            cache = [BatchKVCache.merge([row[i] for row in caches]) for i in range(len(caches[0]))]
            model = self.lm.model

            def step(toks):
                return model(mx.array(toks)[:, None], cache=cache)[:, -1, :], None

            return _timed_decode(step, mx.stack(list(firsts)), tokens)
        with self._session(case) as batch:
            firsts = []
            for i, prompt in enumerate(prompts):
                pre = batch.prefill(prompt, self._interventions(case))
                batch.add(i, pre, self._interventions(case))
                firsts.append(pre.logits)
            return _timed_decode(lambda toks: batch.step(toks, capture=case.capture), mx.stack(firsts), tokens)

    def paired(self, case: Case, batch_size: int, tokens: int) -> dict:
        """Plain and `case` decoding side by side, alternating step by step.

        Two batches over the same prompts advance in lockstep; each step of one
        is timed right next to the same step of the other (which goes first
        alternates), so load from other processes falls on both alike. The
        hooks are installed only around the hooked batch's steps.
        """
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache

        from mlx_interp.steering.hooks import layer_hooks

        prompts = self.contexts[:batch_size]
        model = self.lm.model
        firsts, caches = zip(*(self._plain_prefill(p) for p in prompts))
        plain_cache = [BatchKVCache.merge([row[i] for row in caches]) for i in range(len(caches[0]))]
        plain_toks = mx.argmax(mx.stack(list(firsts)), axis=-1).tolist()
        with self._session(case) as batch:
            pres = []
            for i, prompt in enumerate(prompts):
                pre = batch.prefill(prompt, self._interventions(case))
                batch.add(i, pre, self._interventions(case))
                pres.append(pre.logits)
        hooked_toks = mx.argmax(mx.stack(pres), axis=-1).tolist()

        def plain_step():
            nonlocal plain_toks
            nxt = mx.argmax(model(mx.array(plain_toks)[:, None], cache=plain_cache)[:, -1, :], axis=-1)
            mx.eval(nxt)
            plain_toks = nxt.tolist()

        def hooked_step():
            nonlocal hooked_toks
            logits, hidden = batch.step(hooked_toks, capture=case.capture)
            nxt = mx.argmax(logits, axis=-1)
            mx.eval(nxt, hidden if hidden is not None else [])
            hooked_toks = nxt.tolist()

        plain_wall = hooked_wall = 0.0
        for i in range(tokens):
            with layer_hooks(model, batch.hook):
                if i % 2:
                    with Timer() as th:
                        hooked_step()
            with Timer() as tp:
                plain_step()
            with layer_hooks(model, batch.hook):
                if not i % 2:
                    with Timer() as th:
                        hooked_step()
            plain_wall += tp.wall
            hooked_wall += th.wall
        return {"plain_seconds": plain_wall, "seconds": hooked_wall, "tokens": tokens * batch_size}

    def _interventions(self, case: Case):
        return (self.intervention,) if case.steer else ()

    def _session(self, case: Case):
        from mlx_interp.steering.generation import steering_session

        # capture_layers=() records nothing; None records every layer.
        return steering_session(self.lm, capture_layers=None if case.capture else ())


class Timer:
    """Wall time and this process's CPU time (the latter is less sensitive to other processes' load)."""

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _timed_decode(step, first_logits, tokens: int) -> tuple[float, float]:
    """Greedy decode for `tokens` steps, reading each step's tokens back as a server does."""
    import mlx.core as mx

    toks = mx.argmax(first_logits, axis=-1).tolist()
    with Timer() as t:
        for _ in range(tokens):
            logits, hidden = step(toks)
            nxt = mx.argmax(logits, axis=-1)
            mx.eval(nxt, hidden if hidden is not None else [])
            toks = nxt.tolist()
    return t.wall, t.cpu


def worker_main(model: str) -> int:
    """Line protocol on stdin/stdout: one JSON request per line, one JSON answer per line."""
    worker = Worker(model)
    print(json.dumps({"ready": worker.describe()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("quit"):
            break
        case = CASES_BY_NAME[req["case"]]
        if req["kind"] == "paired":
            result = worker.paired(case, req["batch"], req["tokens"])
        else:
            result = worker.measure(case, req["kind"], req["batch"], req["tokens"])
        print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- parent side
class WorkerProcess:
    def __init__(self, env_name: str, model: str):
        env = {**os.environ, **WORKER_ENVS[env_name]}
        if env_name == "default":  # the default configuration is whatever the user has not overridden
            env.pop("MLX_INTERP_BLAS", None)
            env.pop("MLX_INTERP_DTYPE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_interp.bench_core", "--worker", "--model", model],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.info = self._read()["ready"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker exited with status {self.proc.wait()}")
        return json.loads(line)

    def measure(self, case: str, kind: str, batch: int, tokens: int) -> dict:
        self.proc.stdin.write(json.dumps({"case": case, "kind": kind, "batch": batch, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self, polite: bool = True) -> None:
        """Ask the worker to quit; kill it when interrupted or when it does not answer."""
        if self.proc.poll() is not None:
            return
        if polite:
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
                return
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        self.proc.kill()
        self.proc.wait()


METRICS = ["prompt"] + [f"decode b{b}" for b in BATCH_SIZES]


@dataclass
class Results:
    info: dict
    tokens: int
    repeats: int
    load_before: tuple
    load_after: tuple = ()
    samples: dict = field(default_factory=dict)  # (case, metric) -> [wall tokens/s]
    cpu_samples: dict = field(default_factory=dict)  # (case, metric) -> [tokens per CPU second]
    paired: dict = field(default_factory=dict)  # (case, metric) -> [decode cost], from --paired

    def median(self, case: str, metric: str, cpu: bool = False) -> float:
        return statistics.median((self.cpu_samples if cpu else self.samples)[(case, metric)])

    def has(self, case: str, metric: str) -> bool:
        return (case, metric) in self.samples

    def overhead(self, case: str, metric: str, cpu: bool = False) -> float:
        """Fraction of the default configuration's speed lost by `case` (median of per-repeat ratios)."""
        store = self.cpu_samples if cpu else self.samples
        pairs = zip(store[(case, metric)], store[("default", metric)])
        return statistics.median(1 - c / d for c, d in pairs)


def run_benchmark(model: str = "default", tokens: int = DECODE_TOKENS, repeats: int = REPEATS, cases=None, log=None) -> Results:
    """Measure every case `repeats` times, interleaved; returns tokens/s samples."""
    import signal

    cases = [CASES_BY_NAME[c] for c in (cases or CASES_BY_NAME)]
    log = log or (lambda msg: None)
    workers: dict[str, WorkerProcess] = {}
    results = Results(info={}, tokens=tokens, repeats=repeats, load_before=os.getloadavg())
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the workers
    finished = False
    try:
        for env_name in dict.fromkeys(c.worker for c in cases):
            log(f"loading the model in worker {env_name!r} ...")
            workers[env_name] = WorkerProcess(env_name, model)
            results.info[env_name] = workers[env_name].info
        plan = [("prompt", 1)] + [("decode", b) for b in BATCH_SIZES]
        log("warming up ...")
        for case in cases:
            for kind, batch in plan:
                workers[case.worker].measure(case.name, kind, batch, 2)
        for rep in range(repeats):
            # Rotate the order each repeat so no case always runs right after another.
            order = cases[rep % len(cases) :] + cases[: rep % len(cases)]
            for kind, batch in plan:
                metric = "prompt" if kind == "prompt" else f"decode b{batch}"
                for case in order:
                    r = workers[case.worker].measure(case.name, kind, batch, tokens)
                    results.samples.setdefault((case.name, metric), []).append(r["tokens"] / r["seconds"])
                    results.cpu_samples.setdefault((case.name, metric), []).append(r["tokens"] / r["cpu_seconds"])
            log(f"repeat {rep + 1}/{repeats} done (load {os.getloadavg()[0]:.2f})")
        finished = True
    finally:
        for w in workers.values():
            w.close(polite=finished)
        signal.signal(signal.SIGTERM, previous)
    results.load_after = os.getloadavg()
    return results


PAIRED_CASES = ("hooked", "add-all", "capture-all", "add+capture")


def run_paired(model: str = "default", tokens: int = DECODE_TOKENS, repeats: int = REPEATS, log=None) -> dict:
    """{(case, metric): [per-repeat decode cost vs plain]} from step-by-step paired runs in one worker."""
    import signal

    log = log or (lambda msg: None)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    worker, finished, costs = None, False, {}
    try:
        log("loading the model for the paired run ...")
        worker = WorkerProcess("default", model)
        for case in PAIRED_CASES:
            worker.measure(case, "paired", 1, 2)  # warm-up
        for rep in range(repeats):
            for case in PAIRED_CASES[rep % len(PAIRED_CASES) :] + PAIRED_CASES[: rep % len(PAIRED_CASES)]:
                for batch in BATCH_SIZES:
                    r = worker.measure(case, "paired", batch, tokens)
                    costs.setdefault((case, f"decode b{batch}"), []).append(1 - r["plain_seconds"] / r["seconds"])
            log(f"paired repeat {rep + 1}/{repeats} done (load {os.getloadavg()[0]:.2f})")
        finished = True
    finally:
        if worker is not None:
            worker.close(polite=finished)
        signal.signal(signal.SIGTERM, previous)
    return costs


def format_paired(costs: dict, tokens: int) -> str:
    lines = [f"paired step-by-step decode cost vs plain mlx-lm ({tokens} steps per run; median, min..max over repeats):"]
    for (case, metric), values in costs.items():
        target = OVERHEAD_TARGETS.get(case)
        verdict = "" if target is None else (": ok" if statistics.median(values) < target else ": OVER TARGET")
        lines.append(
            f"  {case:12s} {metric}: {statistics.median(values) * 100:+5.1f}% "
            f"({min(values) * 100:+.1f}..{max(values) * 100:+.1f})"
            + ("" if target is None else f" target < {target * 100:.0f}%") + verdict
        )
    return "\n".join(lines)


def format_table(results: Results) -> str:
    """Markdown table: median tokens/s, and each case's speed relative to the default configuration."""
    head = "| case | " + " | ".join(f"{m} tok/s" for m in METRICS) + " | " + " | ".join(f"{m} vs (b)" for m in METRICS) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(METRICS))]
    for case in CASES:
        if not results.has(case.name, METRICS[0]):
            continue
        speeds = [f"{results.median(case.name, m):.1f}" for m in METRICS]
        ratios = [f"{1 - results.overhead(case.name, m):.3f}" if results.has("default", m) else "-" for m in METRICS]
        lines.append(f"| {case.label.strip()} | " + " | ".join(speeds) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def overhead_lines(results: Results) -> list[str]:
    """Decode-speed cost of steering and capture against the issue's targets, by wall and by CPU time."""
    out = []
    for name, target in OVERHEAD_TARGETS.items():
        for metric in METRICS[1:]:
            if not (results.has(name, metric) and results.has("default", metric)):
                continue
            wall, cpu = results.overhead(name, metric), results.overhead(name, metric, cpu=True)
            verdict = "ok" if min(wall, cpu) < target else "OVER TARGET"
            out.append(
                f"{name:12s} {metric}: {wall * 100:+5.1f}% wall, {cpu * 100:+5.1f}% CPU time "
                f"(target < {target * 100:.0f}%): {verdict}"
            )
    return out


def format_report(results: Results) -> str:
    info = results.info.get("default") or next(iter(results.info.values()))
    lines = [
        f"mlx-interp core benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"model {info['model']}, mlx {info['mlx']}, {info['device']}, {info['machine']}",
        f"prompt {PROMPT_TOKENS} tokens; decode {results.tokens} tokens after a {CONTEXT_TOKENS}-token prompt; "
        f"median of {results.repeats} interleaved repeats",
        "load average before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(*results.load_before, *results.load_after),
    ]
    for env_name, w in results.info.items():
        lines.append(f"worker {env_name}: dtype {w['dtype']}, BLAS {w['blas']}")
    lines += ["", format_table(results)]
    overheads = overhead_lines(results)
    if overheads:
        lines += ["", "ratios are medians of per-repeat ratios; cost = 1 - ratio"] + overheads
    return "\n".join(lines)


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="model spec as for load_model (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=None, help=f"decode steps per run (default {DECODE_TOKENS}, quick {QUICK_TOKENS})")
    parser.add_argument("--repeats", type=int, default=None, help=f"interleaved repeats (default {REPEATS}, quick {QUICK_REPEATS})")
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats: a smoke run, not a measurement")
    parser.add_argument("--cases", default=None, help=f"comma-separated subset of {','.join(CASES_BY_NAME)}")
    parser.add_argument("--json", default=None, help="also write the raw samples to this JSON file")
    parser.add_argument("--paired", action="store_true", help="also time hooked and plain decode steps alternately in one process (overheads under load)")
    return parser


def run_from_args(args) -> Results:
    tokens = args.tokens if args.tokens is not None else (QUICK_TOKENS if args.quick else DECODE_TOKENS)
    repeats = args.repeats if args.repeats is not None else (QUICK_REPEATS if args.quick else REPEATS)
    if tokens < 1 or repeats < 1:
        raise ValueError("--tokens and --repeats must be at least 1")
    cases = args.cases.split(",") if args.cases else None
    unknown = [c for c in cases or () if c not in CASES_BY_NAME]
    if unknown:
        raise ValueError(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES_BY_NAME)}")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    results = run_benchmark(args.model, tokens, repeats, cases, log=log)
    print(format_report(results), flush=True)
    if getattr(args, "paired", False):
        results.paired = run_paired(args.model, tokens, repeats, log=log)
        print("\n" + format_paired(results.paired, tokens), flush=True)
    if args.json:
        raw = {
            f"{case}|{metric}": {"wall": v, "cpu": results.cpu_samples[(case, metric)]}
            for (case, metric), v in results.samples.items()
        }
        paired = {f"{case}|{metric}": v for (case, metric), v in results.paired.items()}
        Path(args.json).write_text(
            json.dumps({"info": results.info, "samples": raw, "paired": paired, "load": [results.load_before, results.load_after]}, indent=1)
        )
    return results


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", action="store_true")
        parser.add_argument("--model", default="default")
        return worker_main(parser.parse_args(argv).model)
    run_from_args(build_arg_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
