"""What a server-side guard costs per decode step: paired step timing, guarded row vs unguarded row.

Each repeat keeps two DecodeBatches over the same prompts and advances them
in lockstep, timing each step of one right next to the same step of the other
(which goes first alternates), as `bench_core.py --paired` does, so load from
other processes falls on both sides alike. Both sides run under the server's
hooks. The sides do what the engine does per step for such rows:

  unguarded  step (no capture), sample, read the tokens back
  guarded    step capturing every layer's residual, score the probe bank
             (one probe, every layer), read the tokens and the scores back,
             judge the row's guard rule on its reading (gateway.guards.RowGuard)

Three costs are reported per batch size: of the summed wall time, of the
summed CPU time of this process, and the median over step pairs of each
pair's cost (robust to a step that another process descheduled; the verdict
uses it), each as the median over repeats.

The rule (`above` 1.0, never reached) is judged every token but never fires:
firing changes a row's steering once, a cost that does not recur per token.
One difference is not measured here: the engine launches an unguarded batch's
next step before it reads the current one, and a guarded batch's only after
its guards are judged; that is the next step's graph construction, which
`bench_server.py`-style end-to-end runs would show.

Run: python bench/bench_guard.py [--model default] [--tokens 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTEXT_TOKENS = 16
DECODE_TOKENS = 32
BATCH_SIZES = (1, 4)
REPEATS = 5
TARGET = 0.03  # the issue: a guard with one probe on every token costs < 3% of decode tok/s


def _clocks() -> tuple[float, float]:
    """Wall time and this process's CPU time (all threads; less sensitive to other processes' load)."""
    return time.perf_counter(), time.process_time()


class Bench:
    def __init__(self, model: str):
        sys.path.insert(0, str(REPO_ROOT))
        import mlx_interp.steering  # noqa: F401  (BLAS before mlx)
        import numpy as np

        from mlx_interp.gateway.guard_spec import Action, GuardRule
        from mlx_interp.probes.probe import Probe
        from mlx_interp.probes.scoring import ProbeBank
        from mlx_interp.steering.model import load_model

        self.lm = load_model(model, progress=False)
        L, D = self.lm.num_layers, self.lm.hidden_size
        rng = np.random.default_rng(0)
        probe = Probe(
            name="bench", layers=tuple(range(L)),
            weights=(rng.standard_normal((L, D)) * 0.01).astype(np.float32), bias=np.zeros(L, np.float32),
            mean=np.zeros((L, D), np.float32), scale=np.ones((L, D), np.float32),
            metadata={"name": "bench", "labels": ["no", "yes"], "method": "logistic", "best_layer": L // 2,
                      "threshold": 0.5, "hidden_size": D, "num_layers": L, "position": "token"},
        )
        self.bank = ProbeBank([probe], L, D)
        self.rule = GuardRule(0, probe, 1.0, 1, Action.STOP)
        vocab = self.lm.config.get("vocab_size", 1000)
        self.contexts = [rng.integers(100, min(vocab, 20000), CONTEXT_TOKENS).tolist() for _ in range(max(BATCH_SIZES))]

    def paired(self, batch_size: int, tokens: int) -> dict:
        """Wall and CPU seconds of each side over `tokens` lockstep decode steps."""
        import mlx.core as mx
        import numpy as np

        from mlx_interp.gateway.guards import RowGuard
        from mlx_interp.steering.capture import Recorder, ResidualHook
        from mlx_interp.steering.generation import DecodeBatch
        from mlx_interp.steering.hooks import layer_hooks

        model = self.lm.model
        prompts = self.contexts[:batch_size]
        sides = {}
        for name in ("plain", "guarded"):
            batch = DecodeBatch(self.lm, ResidualHook(recorder=Recorder(layers=None)))
            with layer_hooks(model, batch.hook):
                firsts = []
                for i, p in enumerate(prompts):
                    pre = batch.prefill(p)
                    batch.add(i, pre)
                    firsts.append(pre.logits)
            sides[name] = (batch, mx.argmax(mx.stack(firsts), axis=-1).tolist())
        guards = [RowGuard((self.rule,), (), ("bench",)) for _ in prompts]
        cols = [self.bank.index("bench")]
        state = {"plain": sides["plain"][1], "guarded": sides["guarded"][1], "t": 0}

        def plain_step():
            batch = sides["plain"][0]
            logits, _ = batch.step(state["plain"], capture=False)
            nxt = mx.argmax(logits, axis=-1)
            mx.eval(nxt)
            state["plain"] = nxt.tolist()

        def guarded_step():
            batch = sides["guarded"][0]
            logits, hidden = batch.step(state["guarded"], capture=True)
            nxt = mx.argmax(logits, axis=-1)
            scores = self.bank.scores(hidden)
            mx.eval(nxt, scores)
            host = np.array(scores)
            for i, g in enumerate(guards):
                if g.judge_token(state["t"], host[i][:, cols].T):
                    batch.set_interventions(i, g.interventions())
            state["guarded"] = nxt.tolist()
            state["t"] += 1

        totals = {"plain": [0.0, 0.0], "guarded": [0.0, 0.0]}  # [wall, cpu]
        pair_costs = []  # per step pair: 1 - plain wall / guarded wall
        for i in range(tokens):
            order = (guarded_step, plain_step) if i % 2 else (plain_step, guarded_step)
            walls = {}
            for fn in order:
                side = "guarded" if fn is guarded_step else "plain"
                with layer_hooks(model, sides[side][0].hook):
                    wall0, cpu0 = _clocks()
                    fn()
                    wall1, cpu1 = _clocks()
                walls[side] = wall1 - wall0
                totals[side][0] += wall1 - wall0
                totals[side][1] += cpu1 - cpu0
            pair_costs.append(1 - walls["plain"] / walls["guarded"])
        totals["pair_median"] = statistics.median(pair_costs)
        return totals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--tokens", type=int, default=DECODE_TOKENS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--json", default=None, help="also write the raw per-repeat numbers here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    bench = Bench(args.model)
    bench.paired(1, 2)  # warm-up
    costs: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    cpu_costs: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    pair_costs: dict[int, list[float]] = {b: [] for b in BATCH_SIZES}
    speeds: dict[int, list[tuple[float, float]]] = {b: [] for b in BATCH_SIZES}
    for rep in range(args.repeats):
        for b in BATCH_SIZES:
            t = bench.paired(b, args.tokens)
            costs[b].append(1 - t["plain"][0] / t["guarded"][0])
            cpu_costs[b].append(1 - t["plain"][1] / t["guarded"][1])
            pair_costs[b].append(t["pair_median"])
            speeds[b].append((args.tokens * b / t["plain"][0], args.tokens * b / t["guarded"][0]))
        print(f"repeat {rep + 1}/{args.repeats} (load {os.getloadavg()[0]:.2f}): "
              + ", ".join(f"b{b} {costs[b][-1] * 100:+.1f}% wall {cpu_costs[b][-1] * 100:+.1f}% CPU "
                          f"{pair_costs[b][-1] * 100:+.1f}% median step pair" for b in BATCH_SIZES),
              file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(f"guard cost, paired step timing: {bench.lm.model_id}, {args.tokens} steps per run, {args.repeats} repeats, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("load average before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(*load_before, *load_after))
    for b in BATCH_SIZES:
        med = statistics.median(costs[b])
        plain = statistics.median(s[0] for s in speeds[b])
        guarded = statistics.median(s[1] for s in speeds[b])
        verdict = "ok" if statistics.median(pair_costs[b]) < TARGET else "OVER TARGET"
        cpu = statistics.median(cpu_costs[b])
        pair = statistics.median(pair_costs[b])
        print(f"  decode b{b}: unguarded {plain:.2f} tok/s, guarded {guarded:.2f} tok/s; cost {med * 100:+.1f}% wall "
              f"(min..max {min(costs[b]) * 100:+.1f}..{max(costs[b]) * 100:+.1f}), {cpu * 100:+.1f}% CPU time "
              f"(min..max {min(cpu_costs[b]) * 100:+.1f}..{max(cpu_costs[b]) * 100:+.1f}), {pair * 100:+.1f}% median step pair "
              f"(min..max {min(pair_costs[b]) * 100:+.1f}..{max(pair_costs[b]) * 100:+.1f}); target < {TARGET * 100:.0f}%: {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"costs": costs, "cpu_costs": cpu_costs, "pair_costs": pair_costs, "speeds": speeds,
                                               "load": [load_before, load_after]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
