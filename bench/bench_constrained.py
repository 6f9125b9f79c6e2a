"""What constrained decoding costs: decode tok/s of free and grammar-constrained requests, side by side, through the server.

Both kinds decode exactly --tokens tokens (greedy; the free one with the end
of sequence banned, the constrained one under a JSON schema that cannot be
completed in that many tokens: an array of at least 8 objects with enums,
integers and nested arrays, so every step computes a structural mask).
Batch 1: one streamed request, tok/s between its first and last token.
Batch 4: four concurrent requests, all tokens over the round's wall time.
Each repeat runs free then constrained or the other way round (alternating);
the report gives each repeat's ratio and their median, for wall-clock tok/s
and for tokens per CPU-second of the server process (/proc; the figure that
survives a machine shared with other work).

Run: python bench/bench_constrained.py [--tokens 48] [--repeats 3] [--json out.json]
     python bench/bench_constrained.py --in-process   # the decode step alone, no HTTP
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import MESSAGES, Server, free_port, stream_once  # noqa: E402

EOS_BAN = {"2": -100}  # SmolLM2's <|im_end|>
ITEM = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["tool", "fruit", "animal", "city"]},
        "count": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "kind", "count", "tags"],
    "additionalProperties": False,
}
SCHEMA = {"type": "array", "items": ITEM, "minItems": 8}  # at least ~150 tokens: never complete in a run
CONSTRAINED = {"response_format": {"type": "json_schema", "json_schema": {"name": "items", "schema": SCHEMA, "strict": True}}}


def batch4(url: str, tokens: int, extra: dict) -> float:
    import httpx

    body = {"model": "default", "messages": MESSAGES, "max_tokens": tokens, "temperature": 0, "logit_bias": EOS_BAN, **extra}

    def one(_):
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=900)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(one, range(4)))
    return total / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): what a request cost, whatever else the machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, fn):
    """(fn's result, server CPU seconds it took)."""
    c0 = cpu_seconds(pid)
    out = fn()
    return out, cpu_seconds(pid) - c0


def in_process(tokens: int, repeats: int) -> dict:
    """The engine's decode step without HTTP: free and constrained runs of `tokens` steps, alternating, in one process.

    Both sides read every step's tokens back (as the server does); the
    constrained side also fills the grammar masks, applies them and feeds the
    tokens to the matchers. Returns per batch size the per-repeat ratios.
    """
    import mlx.core as mx

    from mlx_interp.gateway import constraints
    from mlx_interp.steering.generation import steering_session
    from mlx_interp.steering.model import load_model

    lm = load_model("default", progress=False)
    prompt = list(lm.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True))
    engine = constraints.GrammarEngine(lm.tokenizer, lm.model.args.vocab_size)
    grammar = constraints.check_grammar(constraints.schema_grammar(SCHEMA), "bench", "response_format")
    eos = list(lm.tokenizer.eos_token_ids)

    def pick(logits, rows):
        if rows is not None:
            logits = constraints.apply_masks(logits, constraints.bitmasks(rows), engine)
        else:
            logits[:, eos] = -mx.inf  # the free side never stops either
        out = mx.argmax(logits, axis=-1).tolist()
        for row, t in zip(rows or (), out):
            row.consume(t)
        return out

    results = {}
    with steering_session(lm, capture_layers=None) as batch:
        def run(B: int, constrained: bool) -> float:
            uids = [object() for _ in range(B)]
            firsts = []
            for uid in uids:
                pre = batch.prefill(prompt, ())
                batch.add(uid, pre)
                firsts.append(pre.logits)
            rows = [engine.matcher(grammar) for _ in uids] if constrained else None
            toks = pick(mx.stack(firsts), rows)
            start = time.perf_counter()
            for _ in range(tokens):
                logits, _ = batch.step(toks, capture=False)
                toks = pick(logits, rows)
            elapsed = time.perf_counter() - start
            batch.remove(uids)
            return B * tokens / elapsed

        run(1, True)  # warm: the grammar engine's tokenizer, first masks
        for B in (1, 4):
            rows = []
            for r in range(repeats):
                order = (False, True) if r % 2 == 0 else (True, False)
                got = {c: run(B, c) for c in order}
                rows.append({"free": got[False], "constrained": got[True], "ratio": got[True] / got[False]})
                print(f"in-process batch {B} repeat {r}: free {got[False]:6.2f} tok/s  constrained {got[True]:6.2f} tok/s  "
                      f"ratio {got[True] / got[False]:.3f}", flush=True)
            results[f"batch{B}"] = rows
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--in-process", action="store_true", help="time the decode step in this process instead of through the server")
    args = ap.parse_args(argv)
    if args.in_process:
        load = [os.getloadavg()[0]]
        rows = in_process(args.tokens, args.repeats)
        load.append(os.getloadavg()[0])
        for b, v in rows.items():
            print(f"{b}: median ratio {statistics.median(x['ratio'] for x in v):.3f} over {len(v)} repeats "
                  f"(free median {statistics.median(x['free'] for x in v):.2f} tok/s)")
        print(f"load average: {load[0]:.1f} at the start, {load[1]:.1f} at the end")
        if args.json:
            Path(args.json).write_text(json.dumps({"tokens": args.tokens, "in_process": rows, "load": load}, indent=1))
        return 0
    port = free_port()
    server = Server([sys.executable, "-m", "mlx_interp.cli", "serve", "--port", str(port)], port)
    pid = server.proc.pid
    rows = {"batch1": [], "batch4": []}
    load = [os.getloadavg()[0]]
    try:
        # warm both paths (the grammar engine's tokenizer is built on the first constrained request)
        stream_once(server.url, 8, EOS_BAN)
        stream_once(server.url, 8, EOS_BAN, CONSTRAINED)
        for r in range(args.repeats):
            order = [("free", {}), ("constrained", CONSTRAINED)]
            if r % 2:
                order.reverse()
            result = {"batch1": {}, "batch4": {}}
            cpu = {"batch1": {}, "batch4": {}}
            for name, extra in order:
                (n, tps), c1 = measured(pid, lambda: stream_once(server.url, args.tokens, EOS_BAN, extra))
                # a token whose text the detokenizer holds back streams no chunk of its own: count chunks, allow a few short
                if n < args.tokens - 4:
                    raise RuntimeError(f"{name}: {n} text chunks streamed, expected about {args.tokens}: it stopped early")
                result["batch1"][name] = tps
                cpu["batch1"][name] = args.tokens / c1
                result["batch4"][name], c4 = measured(pid, lambda: batch4(server.url, args.tokens, extra))
                cpu["batch4"][name] = 4 * args.tokens / c4
            for b in rows:
                f, c = result[b]["free"], result[b]["constrained"]
                fc, cc = cpu[b]["free"], cpu[b]["constrained"]
                rows[b].append({"free": f, "constrained": c, "ratio": c / f, "free_per_cpu_s": fc, "constrained_per_cpu_s": cc, "cpu_ratio": cc / fc})
                print(f"repeat {r} {b}: free {f:6.2f} tok/s  constrained {c:6.2f} tok/s  ratio {c / f:.3f} | "
                      f"tokens per server CPU-second: free {fc:6.2f} constrained {cc:6.2f} ratio {cc / fc:.3f}", flush=True)
            load.append(os.getloadavg()[0])
    finally:
        server.stop()
    summary = {b: {"median_ratio": statistics.median(x["ratio"] for x in v),
                   "median_cpu_ratio": statistics.median(x["cpu_ratio"] for x in v),
                   "median_free": statistics.median(x["free"] for x in v),
                   "median_constrained": statistics.median(x["constrained"] for x in v)} for b, v in rows.items()}
    for b, s in summary.items():
        print(f"{b}: free {s['median_free']:.2f} tok/s, constrained {s['median_constrained']:.2f} tok/s, "
              f"median ratio {s['median_ratio']:.3f} (cost {100 * (1 - s['median_ratio']):.1f}%); "
              f"per server CPU-second, median ratio {s['median_cpu_ratio']:.3f} (cost {100 * (1 - s['median_cpu_ratio']):.1f}%)")
    print(f"load average during the run: {min(load):.1f}-{max(load):.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"tokens": args.tokens, "rows": rows, "summary": summary, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
