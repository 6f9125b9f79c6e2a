"""Server benchmark: decode speed through `mlx-interp serve` next to mlx-lm on the same weights.

Rows (all on the same model directory, greedy, end-of-sequence banned so every
run decodes exactly --tokens tokens):
  in-process mlx-lm   stream_generate in this process (checkpoint weights, and float32 like our default)
  mlx-interp serve    one streamed request; 4 concurrent clients; 8 probes on every layer, per token
  mlx_lm.server       one streamed request; 4 concurrent clients
Our server runs twice: with its default dtype (float32 on CPU) and with
--dtype native (the checkpoint's quantized weights, as mlx_lm.server uses).

Single-stream tok/s is measured between the first and the last streamed token
(prompt processing excluded); concurrent tok/s is all clients' tokens over the
wall time of the whole round.

--float32-mlx-lm adds mlx_lm.server on a float32 copy of the weights (the weights our
server computes with on CPU) in a process that loads OpenBLAS first, as ours does: once
with every product through OpenBLAS's sgemm (MLX_INTERP_GEMV=0) and once with the gemv
shim in front of it too (steering/gemv_shim.c), i.e. the same weights and BLAS.
--skip-native leaves out our --dtype native server and the quantized mlx_lm.server.

Run: python bench/bench_server.py [--model-dir DIR] [--tokens 64] [--repeats 2] [--float32-mlx-lm]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_MODEL_DIR = Path("~/.cache/mlx-interp/models/SmolLM2-135M-Instruct").expanduser()
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
CLIENTS = 4
PROBES = 8
STARTUP_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, cmd: list[str], port: int, env: dict | None = None):
        import httpx

        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=None if env is None else {**os.environ, **env})
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"{cmd[:4]} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stream_once(url: str, tokens: int, eos_ban: dict, extra: dict | None = None, model: str = "default") -> tuple[int, float]:
    """(tokens received, decode tok/s between the first and the last token) for one streamed request."""
    import httpx

    body = {"model": model, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0, "stream": True,
            "logit_bias": eos_ban, **(extra or {})}
    stamps = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            choices = chunk.get("choices") or []
            if choices and (choices[0].get("delta", {}).get("content") or choices[0].get("text")):
                stamps.append(time.perf_counter())
    n = len(stamps)
    return n, (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else 0.0


def concurrent_round(url: str, tokens: int, eos_ban: dict, model: str = "default") -> float:
    """Aggregate tok/s of CLIENTS non-streamed requests sent at once."""
    import httpx

    body = {"model": model, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0, "logit_bias": eos_ban}

    def one(_):
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=900)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        total = sum(pool.map(one, range(CLIENTS)))
    return total / (time.perf_counter() - start)


def upload_probes(url: str, admin_key: str) -> list[str]:
    """PROBES random probes with weights on every layer."""
    import httpx
    import numpy as np
    from safetensors.numpy import save

    facts = httpx.get(url + "/v1/models").json()["data"][0]
    L, D = facts["num_layers"], facts["hidden_size"]
    rng = np.random.default_rng(0)
    names = []
    for i in range(PROBES):
        name = f"bench_probe_{i}"
        tensors = {"layers": np.arange(L, dtype=np.int32), "weights": (rng.standard_normal((L, D)) * 0.02).astype(np.float32),
                   "bias": np.zeros(L, np.float32), "mean": np.zeros((L, D), np.float32), "scale": np.ones((L, D), np.float32)}
        meta = {"format_version": 1, "name": name, "labels": ["no", "yes"], "method": "logistic", "best_layer": L // 2,
                "threshold": 0.5, "hidden_size": D, "num_layers": L, "model_fingerprint": facts["fingerprint"]}
        r = httpx.post(url + "/v1/probes", headers={"Authorization": f"Bearer {admin_key}"}, timeout=60,
                       json={"name": name, "metadata": meta, "safetensors": base64.b64encode(save(tensors)).decode()})
        r.raise_for_status()
        names.append(name)
    return names


def median_of(fn, repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def bench_in_process(model_dir: Path, tokens: int, repeats: int, eos_ban: dict) -> dict[str, float]:
    import mlx_interp.steering  # noqa: F401  (OpenBLAS first, as the server does)
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_logits_processors

    from mlx_interp.steering.model import load_model

    processors = make_logits_processors(logit_bias={int(k): v for k, v in eos_ban.items()})
    results = {}
    native_model, tokenizer = load(str(model_dir))
    ours = load_model(str(model_dir), progress=False)
    for label, model in (("native", native_model), (ours.dtype, ours.model)):
        prompt = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)

        def run():
            last = None
            for last in stream_generate(model, tokenizer, prompt, max_tokens=tokens, logits_processors=processors):
                pass
            return last.generation_tps

        run()  # warm-up
        results[label] = median_of(run, repeats)
    return results


MLX_LM_SERVER_WITH_OPENBLAS = (
    "import sys; sys.path.insert(0, {root!r}); import mlx_interp.steering; "
    "from mlx_lm.server import main; sys.argv = ['mlx_lm.server'] + {args!r}; main()"
)


def float32_copy(model_dir: Path) -> Path:
    """The model dequantized to float32, saved once next to the model cache (what our CPU default computes with)."""
    import shutil

    import mlx_interp.steering  # noqa: F401
    from mlx_lm.utils import save_config, save_model

    from mlx_interp.steering.model import load_model

    target = model_dir.parent / (model_dir.name + "-float32")
    if (target / "model.safetensors").exists():
        return target
    lm = load_model(str(model_dir), dtype="float32", progress=False)
    save_model(target, lm.model)
    config = {k: v for k, v in lm.config.items() if k not in ("quantization", "quantization_config")}
    save_config(config, target / "config.json")
    for f in model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("generation_config.json", "special_tokens_map.json"):
            shutil.copy(f, target / f.name)
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--float32-mlx-lm", action="store_true")
    ap.add_argument("--skip-native", action="store_true")
    args = ap.parse_args(argv)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.model_dir))
    eos_ban = {str(tok.eos_token_id): -100}
    rows: list[tuple[str, str, float]] = []

    admin = "bench-admin"
    for dtype in ("auto",) if args.skip_native else ("auto", "native"):
        port = free_port()
        library = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlx-interp-bench-{port}"
        cmd = [sys.executable, "-m", "mlx_interp.cli", "serve", "--model", str(args.model_dir), "--port", str(port),
               "--dtype", dtype, "--admin-key", admin, "--probes", str(library)]
        # Uploads go to the server's user library: a home of the bench's own keeps the user's clean.
        server = Server(cmd, port, env={"MLX_INTERP_HOME": str(library / "home")})
        try:
            label = "mlx-interp serve" + (" --dtype native" if dtype == "native" else " (float32)")
            stream_once(server.url, 8, eos_ban)  # warm-up
            rows.append((label, "1 stream, tok/s", median_of(lambda: stream_once(server.url, args.tokens, eos_ban)[1], args.repeats)))
            rows.append((label, f"{CLIENTS} clients, total tok/s", median_of(lambda: concurrent_round(server.url, args.tokens, eos_ban), args.repeats)))
            if dtype == "auto":
                names = upload_probes(server.url, admin)
                probes = {"probes": {n: {"per_token": True} for n in names}}
                rows.append((label, f"1 stream + {PROBES} probes x every layer, tok/s",
                             median_of(lambda: stream_once(server.url, args.tokens, eos_ban, probes)[1], args.repeats)))
        finally:
            server.stop()

    theirs_runs = [] if args.skip_native else [("mlx_lm.server (native)", args.model_dir, None)]
    if args.float32_mlx_lm:
        f32 = float32_copy(args.model_dir)
        theirs_runs += [("mlx_lm.server (float32, OpenBLAS sgemm)", f32, "0"),
                        ("mlx_lm.server (float32, OpenBLAS + gemv shim)", f32, "auto")]
    for label, model_dir, gemv in theirs_runs:
        port = free_port()
        if gemv is None:
            cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model_dir), "--port", str(port),
                   "--log-level", "ERROR"]
        else:
            code = MLX_LM_SERVER_WITH_OPENBLAS.format(
                root=str(REPO_ROOT), args=["--model", str(model_dir), "--port", str(port), "--log-level", "ERROR"])
            cmd = [sys.executable, "-c", code]
            os.environ["MLX_INTERP_GEMV"] = gemv  # inherited by the server process only for this start
        try:
            server = Server(cmd, port)
        finally:
            os.environ.pop("MLX_INTERP_GEMV", None)
        theirs = str(model_dir)  # mlx_lm.server names its model by the path it was started with
        try:
            stream_once(server.url, 8, eos_ban, model=theirs)
            rows.append((label, "1 stream, tok/s",
                         median_of(lambda: stream_once(server.url, args.tokens, eos_ban, model=theirs)[1], args.repeats)))
            rows.append((label, f"{CLIENTS} clients, total tok/s",
                         median_of(lambda: concurrent_round(server.url, args.tokens, eos_ban, model=theirs), args.repeats)))
        finally:
            server.stop()

    if not args.skip_native:
        for label, tps in bench_in_process(args.model_dir, args.tokens, args.repeats, eos_ban).items():
            rows.append((f"mlx-lm in-process ({label})", "1 stream, tok/s", tps))

    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{args.tokens} tokens per request, median of {args.repeats}; model {args.model_dir.name}")
    print(f"{'setup':<{width}}{'measure':<42}{'value':>8}")
    for label, measure, value in rows:
        print(f"{label:<{width}}{measure:<42}{value:8.1f}")
    print(f"load average at end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
