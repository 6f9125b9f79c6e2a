"""What constrained decoding costs: decode tok/s of free and grammar-constrained requests, side by side, through the server.

Both kinds decode exactly --tokens tokens (greedy; the free one with the end
of sequence banned, the constrained one under a JSON schema that cannot be
completed in that many tokens: an array of at least 100 objects with enums,
integers and nested arrays, so every step computes a structural mask).
Batch 1: one streamed request, tok/s between its first and last token.
Batch 4: four concurrent requests, all tokens over the round's wall time.
Each repeat runs free then constrained or the other way round (alternating);
the report gives each repeat's ratio and their median, for wall-clock tok/s
and for tokens per CPU-second of the server process (/proc; the figure that
survives a machine shared with other work).

Run: python bench/bench_constrained.py [--tokens 48] [--repeats 3] [--json out.json]
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
SCHEMA = {"type": "array", "items": ITEM, "minItems": 100}
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
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
