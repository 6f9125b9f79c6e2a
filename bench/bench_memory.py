"""Memory under heavy single requests (issue 14): the server's resident size while the limits are pushed.

Starts `mlx-interp serve` (default limits), samples the server process's RSS
from /proc every 0.1 s, and runs, one after another:
  big-request   one /v1/completions with --prompts prompts x n --n (256 rows by default, ~--prompt-tokens
                tokens each, --max-tokens each), and a 4-token request sent while it runs: its latency
  prompt-cache  --cache-prompts distinct ~1k-token prompts, one at a time (the prompt cache keeps them,
                up to --prompt-cache-bytes)
and prints RSS before, peak during and after each, in MB. Linux only (/proc).

Run: python bench/bench_memory.py [--model-dir DIR] [--prompts 16] [--n 16] [--prompt-tokens 200] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "bench"))
from bench_server import DEFAULT_MODEL_DIR, Server, free_port  # noqa: E402

SAMPLE_S = 0.1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssWatch:
    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.before = rss_mb(self.pid)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(SAMPLE_S)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.after = rss_mb(self.pid)


def words(n_tokens: int, seed: int) -> str:
    vocab = ["river", "stone", "lamp", "north", "quiet", "harbour", "ember", "violet", "market", "signal"]
    return " ".join(vocab[(i * 7 + seed * 3 + i // 10) % len(vocab)] + str(seed) for i in range(n_tokens // 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--cache-prompts", type=int, default=8)
    ap.add_argument("--prompt-cache-bytes", type=int, default=None, help="passed to serve (default: the server's)")
    args = ap.parse_args()

    import signal

    import httpx

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed bench still stops its server (finally)
    port = free_port()
    cmd = [sys.executable, "-m", "mlx_interp.cli", "serve", "--model", args.model_dir, "--port", str(port)]
    if args.prompt_cache_bytes:
        cmd += ["--prompt-cache-bytes", str(args.prompt_cache_bytes)]
    server = Server(cmd, port)
    pid = server.proc.pid
    rows = []
    try:
        big = {"model": "default", "prompt": [words(args.prompt_tokens, i) for i in range(args.prompts)], "n": args.n,
               "max_tokens": args.max_tokens, "temperature": 0, "logit_bias": {"2": -100, "0": -100}}
        small = {"model": "default", "prompt": "Hello", "max_tokens": 4, "temperature": 0}
        small_latency = {}
        with RssWatch(pid) as w:
            t0 = time.monotonic()
            t = threading.Thread(target=lambda: small_latency.setdefault(
                "big", (httpx.post(server.url + "/v1/completions", json=big, timeout=1800), time.monotonic() - t0)))
            t.start()
            while httpx.get(server.url + "/health").json()["batch_size"] == 0 and t.is_alive():
                time.sleep(0.05)
            s0 = time.monotonic()
            r = httpx.post(server.url + "/v1/completions", json=small, timeout=1800)
            small_latency["small"] = (r, time.monotonic() - s0)
            t.join()
        big_r, big_s = small_latency["big"]
        rows.append(("big-request", w, f"{args.prompts}x{args.n} rows: {big_r.status_code} in {big_s:.1f}s; "
                     f"4-token request beside it: {small_latency['small'][1]:.1f}s"))
        report(rows[-1:], header=True)
        with RssWatch(pid) as w:
            for i in range(args.cache_prompts):
                body = {"model": "default", "prompt": words(1000, 100 + i), "max_tokens": 1}
                httpx.post(server.url + "/v1/completions", json=body, timeout=1800).raise_for_status()
        rows.append(("prompt-cache", w, f"{args.cache_prompts} distinct ~1k-token prompts"))
        report(rows[-1:])
    finally:
        server.stop()
    return 0


def report(rows, header: bool = False) -> None:
    if header:
        print(f"{'case':14} {'before MB':>10} {'peak MB':>10} {'after MB':>10}  notes")
    for name, w, note in rows:
        print(f"{name:14} {w.before:10.0f} {w.peak:10.0f} {w.after:10.0f}  {note}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
