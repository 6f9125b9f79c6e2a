"""`serve --ranks 2` next to `serve` on one machine: decode speed and the cost per step of going through two ranks.

Informational: on one machine two ranks cannot be faster than one (the point of
ranks is a model bigger than one machine, or on this 2-core VM nothing at all);
what this shows is the price of the control plane (one message per operation
over mx.distributed) and of the pipeline hand-over per decode step.

Rows, each a real server on the default model, greedy, end-of-sequence banned:
  1 rank                 plain `serve`
  2 ranks, pipeline      `serve --ranks 2` (layers 0-14 on rank 1, 15-29 on rank 0)
  2 ranks, pipeline +probes   the same with 8 probes on every layer, scored per token (scores summed over ranks)
Measured: single-stream decode tok/s (first to last streamed token) and 4 concurrent clients' tok/s;
servers alternate repeat by repeat, so load from other processes falls on all of them alike.

Run: python bench/bench_ranks.py [--tokens 32] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import Server, concurrent_round, free_port, stream_once, upload_probes  # noqa: E402

ADMIN = "bench-admin"


def eos_ban(url: str) -> dict:
    from mlx_interp.steering.model import load_model

    lm = load_model("default", progress=False)
    return {str(t): -100 for t in lm.tokenizer.eos_token_ids}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    load_before = os.getloadavg()
    configs = {"1 rank": [], "2 ranks, pipeline": ["--ranks", "2"]}
    servers = {}
    for name, extra in configs.items():
        port = free_port()
        cmd = [sys.executable, "-m", "mlx_interp.cli", "serve", "--port", str(port), "--admin-key", ADMIN, *extra]
        servers[name] = Server(cmd, port)
    ban = eos_ban(servers["1 rank"].url)
    probes = {name: upload_probes(s.url, ADMIN) for name, s in servers.items()}
    rows: dict[str, dict[str, list]] = {}
    try:
        for rep in range(args.repeats):
            for name, s in servers.items():
                for label, extra in (("", None), (" +8 probes", {"probes": probes[name]})):
                    key = name + label
                    r = rows.setdefault(key, {"stream": [], "concurrent": []})
                    n, tps = stream_once(s.url, args.tokens, ban, extra)
                    r["stream"].append(tps)
                    if not label:
                        r["concurrent"].append(concurrent_round(s.url, args.tokens, ban))
                    print(f"repeat {rep}: {key}: stream {tps:.2f} tok/s", flush=True)
    finally:
        for s in servers.values():
            s.stop()
    load_after = os.getloadavg()
    report = {"tokens": args.tokens, "repeats": args.repeats, "load_before": load_before, "load_after": load_after,
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": {}}
    base = statistics.median(rows["1 rank"]["stream"])
    print(f"\nload average {load_before[0]:.1f} before, {load_after[0]:.1f} after; medians of {args.repeats}")
    print("| server | stream tok/s | ms/step | extra ms/step vs 1 rank | 4 clients tok/s |")
    print("|---|---|---|---|---|")
    for key, r in rows.items():
        tps = statistics.median(r["stream"])
        conc = statistics.median(r["concurrent"]) if r["concurrent"] else None
        extra = 1000 / tps - 1000 / base
        report["rows"][key] = {"stream_tps": tps, "concurrent_tps": conc, "ms_per_step": 1000 / tps, "extra_ms_per_step": extra}
        print(f"| {key} | {tps:.2f} | {1000 / tps:.0f} | {extra:+.0f} | {'' if conc is None else f'{conc:.2f}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
