"""Single-stream decode: mlx-interp serve (raw SSE client) next to mlx-lm in-process, same weights.

A lighter check than bench_server.py for the "within 5% of mlx-lm" target: the
client is plain httpx reading SSE lines, so as little client work as possible
shares the CPU with the server. Both sides decode exactly --tokens tokens
(end-of-sequence banned) of the same prompt; tokens/s is measured between the
first and the last token. In-process runs first, in a subprocess, then the server.

Rounds interleave the two (the server stays up, idle, while mlx-lm runs), so load from
other processes falls on both alike; each round also runs mlx-lm with the gemv shim
switched off (MLX_INTERP_GEMV=0: every product through OpenBLAS's sgemm, as mlx-lm
runs on its own) and on (the same routing the server uses; steering/gemv_shim.c).

Run: python bench/bench_stream.py [--model default] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Write a long story about a lighthouse keeper."

IN_PROCESS = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import mlx_interp.steering
from mlx_interp.steering.model import load_model
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_logits_processors
lm = load_model({model!r}, progress=False)
eos = list(lm.tokenizer.eos_token_ids)
prompt = lm.tokenizer.apply_chat_template([{{"role": "user", "content": {prompt!r}}}], add_generation_prompt=True)
rates = []
for _ in range({repeats}):
    stamps = [time.perf_counter() for _ in stream_generate(lm.model, lm.tokenizer, prompt, max_tokens={tokens},
              logits_processors=make_logits_processors(logit_bias={{e: -100 for e in eos}}))]
    rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
print(json.dumps(rates))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(model: str, tokens: int, repeats: int, gemv: bool = True) -> list[float]:
    import os

    code = IN_PROCESS.format(root=str(ROOT), model=model, prompt=PROMPT, tokens=tokens, repeats=repeats)
    env = {**os.environ, "MLX_INTERP_GEMV": "auto" if gemv else "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def through_server(model: str, tokens: int, repeats: int, between=None) -> list[float]:
    """Server rates, one request per round; `between()` runs before each measured request."""
    import httpx

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlx_interp.cli", "serve", "--model", model, "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        eos_bias = {str(t): -100 for t in httpx.get(url + "/v1/models").json().get("eos_token_ids", [])} or {"2": -100}
        body = {"model": "default", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
                "stream": True, "logit_bias": eos_bias}
        rates = []
        for i in range(repeats + 1):  # the first warms the server up
            if i and between is not None:
                between()
            stamps = []
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {") and '"content"' in line:
                        stamps.append(time.perf_counter())
            rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        return rates[1:]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import os

    print(f"load average at start: {os.getloadavg()}", flush=True)
    sgemm, gemv = [], []

    def both():  # one mlx-lm run each way, the order alternating
        pair = [(sgemm, False), (gemv, True)]
        for out, on in (pair if len(sgemm) % 2 == 0 else pair[::-1]):
            out.append(in_process(args.model, args.tokens, 1, gemv=on)[0])

    served = through_server(args.model, args.tokens, args.repeats, between=both)
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    a, g, b = statistics.median(sgemm), statistics.median(gemv), statistics.median(served)
    print(f"mlx-lm in-process, OpenBLAS sgemm      {a:6.2f} tok/s  (runs: {fmt(sgemm)})")
    print(f"mlx-lm in-process, with the gemv shim  {g:6.2f} tok/s  (runs: {fmt(gemv)})")
    print(f"mlx-interp serve                       {b:6.2f} tok/s  (runs: {fmt(served)})")
    per_round = [s / x for s, x in zip(served, sgemm)]
    per_round_g = [s / x for s, x in zip(served, gemv)]
    print(f"server / mlx-lm (sgemm): {b / a:.3f}, per round {fmt(per_round)}  (target >= 1.2)")
    print(f"server / mlx-lm (gemv shim too): {b / g:.3f}, per round {fmt(per_round_g)}")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
