#!/usr/bin/env python3
"""mlx_lm.server next to `mlx-interp serve` on one GPU, same weights, both servers up at once, interleaved.

Run on the device from the mlx-interp repository root (the servers are started from there):
  PYTHONPATH=/root/pkgs python3 bench_servers_gpu.py --model /root/model --out $OUT --phases single,ttft --budget 500

Phases (each repeated --reps times; the order of servers / variants alternates from repeat to repeat):
  single   one streamed request, max_tokens 256, temperature 0: decode tok/s between first and last content chunk
  ttft     one streamed request with a ~2,000-token prompt (new text each time: no prefix-cache reuse), max_tokens 8
  conc8    8 streamed clients at once (barrier), max_tokens 256: all completion tokens / wall time of the round
  conc32   the same with 32 clients
  steer1   mlx-interp only: plain, steer (add on all 28 layers), 8 probes x 28 layers per token, both; one stream
  steer8   the same variants with 8 clients
End-of-sequence ids 0, 1, 2 get logit_bias -100 on both servers, so every request decodes exactly max_tokens
(checked from usage.completion_tokens, which is what the tok/s use).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx

EOS_BAN = {"0": -100, "1": -100, "2": -100}
BASE_PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
N_PROBES = 8
WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact sea light keeper stone ship wind harbour night storm rope "
         "lamp tower island bird cliff wave letter bottle door window table chair road river mountain forest city "
         "village market music story answer question reason memory silver golden quiet bright early late small "
         "large ancient modern careful sudden gentle heavy open closed warm cold north south east west").split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now() -> float:
    return time.perf_counter()


# -- servers ---------------------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, log_dir: Path, model_name: str, env=None):
        self.name, self.cmd, self.port, self.model_name = name, cmd, port, model_name
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.started = time.time()
        # Started outside any checkout: from a repository root, `python -m mlx_interp.cli` finds the
        # bare mlx_interp/ folder there instead of the installed package (and has no `serve`).
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=tempfile.gettempdir())

    def wait_ready(self, timeout: float = 300) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log tail:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return time.time() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; log tail:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except Exception:
            return float("nan")

    def tail(self, n: int = 3000) -> str:
        self.log.flush()
        try:
            return self.log_path.read_text()[-n:]
        except Exception:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- GPU monitor -----------------------------------------------------------------------------------------


class GpuMonitor:
    """nvidia-smi every 250 ms; samples stamped with nvidia-smi's own clock (local time)."""

    def __init__(self, path: Path):
        self.samples: list[tuple[float, float, float, float]] = []  # (epoch, util %, mem MiB, power W)
        self.path = path
        try:
            import shutil
            self.proc = subprocess.Popen(
                (["stdbuf", "-oL"] if shutil.which("stdbuf") else []) + ["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used,power.draw",
                 "--format=csv,noheader,nounits", "-lms", "250"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()
        except Exception as exc:  # no nvidia-smi: no hints
            print("gpu monitor off:", exc, flush=True)
            self.proc = None

    def _read(self) -> None:
        with open(self.path, "w") as f:
            for line in self.proc.stdout:
                f.write(line)
                try:
                    ts, util, mem, power = [x.strip() for x in line.split(",")]
                    t = datetime.strptime(ts, "%Y/%m/%d %H:%M:%S.%f").timestamp()
                    self.samples.append((t, float(util), float(mem), float(power)))
                except Exception:
                    pass

    def window(self, t0: float, t1: float) -> dict:
        s = [x for x in list(self.samples) if t0 <= x[0] <= t1]
        if not s:
            return {}
        return {"gpu_util_mean": round(statistics.mean(x[1] for x in s), 1), "gpu_mem_max_mib": max(x[2] for x in s),
                "gpu_power_mean_w": round(statistics.mean(x[3] for x in s), 1), "gpu_samples": len(s)}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()


# -- client ------------------------------------------------------------------------------------------------


def stream_once(server: Server, prompt: str, max_tokens: int, extra: dict | None = None, start: float | None = None) -> dict:
    body = {"model": server.model_name, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "logit_bias": EOS_BAN,
            **(extra or {})}
    stamps, usage, finish, probe_chunks = [], None, None, 0
    t0 = now()
    with httpx.Client(timeout=httpx.Timeout(900.0, connect=30.0)) as client:
        with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"{server.name} HTTP {r.status_code}: {r.read().decode(errors='replace')[:600]}")
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line.strip() == "data: [DONE]":
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"{server.name} in-band error: {json.dumps(chunk)[:600]}")
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for c in chunk.get("choices") or []:
                    if (c.get("delta") or {}).get("content"):
                        stamps.append(now())
                    if c.get("probes"):
                        probe_chunks += 1
                    if c.get("finish_reason"):
                        finish = c["finish_reason"]
    t_end = now()
    n = int(usage["completion_tokens"]) if usage else len(stamps)
    out = {"t0": t0, "t_end": t_end, "content_chunks": len(stamps), "completion_tokens": n,
           "prompt_tokens": usage.get("prompt_tokens") if usage else None, "usage_present": usage is not None,
           "finish_reason": finish, "probe_chunks": probe_chunks,
           "ttft_s": (stamps[0] - t0) if stamps else None,
           "decode_tps": (n - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None,
           "e2e_tps": n / (t_end - t0)}
    return out


def concurrent(server: Server, n: int, max_tokens: int, tag: str, extra: dict | None = None) -> dict:
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        return stream_once(server, f"Client {i}, {tag}. {BASE_PROMPT}", max_tokens, extra)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        res = [f.result() for f in futures]
    t_start, t_end = min(r["t0"] for r in res), max(r["t_end"] for r in res)
    tokens = sum(r["completion_tokens"] for r in res)
    ttfts = [r["ttft_s"] for r in res if r["ttft_s"] is not None]
    per = [r["decode_tps"] for r in res if r["decode_tps"]]
    return {"clients": n, "completion_tokens": tokens, "wall_s": t_end - t_start, "agg_tps": tokens / (t_end - t_start),
            "ttft_mean_s": statistics.mean(ttfts) if ttfts else None, "ttft_max_s": max(ttfts) if ttfts else None,
            "per_client_decode_tps_median": statistics.median(per) if per else None,
            "tokens_each": sorted({r["completion_tokens"] for r in res}), "usage_all": all(r["usage_present"] for r in res)}


def long_prompt(tokenizer, target: int, seed: int) -> str:
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(int(target * 1.1))]
    while len(tokenizer.encode(" ".join(words)).ids) > target:
        words = words[: int(len(words) * 0.98)]
    return " ".join(words)


# -- artifacts for mlx-interp: one vector on all layers, 8 probes on all layers ----------------------------------


def write_artifacts(root: Path, L: int, D: int) -> tuple[Path, Path]:
    import numpy as np
    from safetensors.numpy import save_file

    vdir, pdir = root / "vectors", root / "probes"
    vdir.mkdir(parents=True, exist_ok=True)
    pdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    d = rng.standard_normal((L, D)).astype(np.float32)
    d = (d / np.linalg.norm(d, axis=1, keepdims=True) * 0.5).astype(np.float32)  # norm 0.5 per layer
    save_file({"directions": d}, str(vdir / "bench_vec.safetensors"))
    meta = {"format_version": 1, "name": "bench_vec", "description": "random direction, norm 0.5, every layer",
            "model_id": None, "model_fingerprint": None, "hidden_size": D, "num_layers": L, "method": "random",
            "recommended_layers": list(range(L)), "layer_norms": [0.5] * L, "default_alpha": 1.0,
            "dataset_hash": None, "created": datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}
    (vdir / "bench_vec.json").write_text(json.dumps(meta, indent=2))
    for i in range(N_PROBES):
        name = f"bench_probe_{i}"
        tensors = {"layers": np.arange(L, dtype=np.int32), "weights": (rng.standard_normal((L, D)) * 0.02).astype(np.float32),
                   "bias": np.zeros(L, np.float32), "mean": np.zeros((L, D), np.float32), "scale": np.ones((L, D), np.float32)}
        save_file(tensors, str(pdir / f"{name}.safetensors"))
        pm = {"format_version": 1, "name": name, "labels": ["no", "yes"], "method": "logistic", "best_layer": L // 2,
              "threshold": 0.5, "hidden_size": D, "num_layers": L, "model_fingerprint": None}
        (pdir / f"{name}.json").write_text(json.dumps(pm, indent=2))
    return vdir, pdir


STEER = {"steer": [{"vector": "bench_vec", "alpha": 1.0, "op": "add", "layers": "all"}]}
PROBES = {"probes": {f"bench_probe_{i}": {"per_token": True} for i in range(N_PROBES)}}
VARIANTS = {"plain": {}, "steer": STEER, "probes": PROBES, "steer+probes": {**STEER, **PROBES}}


# -- driver ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/root/model")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    ap.add_argument("--phases", default="single,ttft")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--budget", type=float, default=520, help="seconds for the whole run; measurements that would not fit are skipped")
    ap.add_argument("--variants", default="plain,steer,probes,steer+probes")
    ap.add_argument("--interp-args", default="", help="extra arguments for mlx-interp serve")
    ap.add_argument("--lib", type=Path, default=Path("/root/lib"))
    ap.add_argument("--servers", default="lm,interp")
    args = ap.parse_args()
    args.model = str(Path(args.model).resolve())  # the servers start in the temp folder
    args.lib = Path(args.lib).resolve()
    t_begin = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    results: list[dict] = []
    meta: dict = {"args": vars(args) | {"out": str(args.out), "lib": str(args.lib)}, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def save():
        (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))

    def left() -> float:
        return args.budget - (time.time() - t_begin)

    cfg = json.loads((Path(args.model) / "config.json").read_text())
    L, D = cfg["num_hidden_layers"], cfg["hidden_size"]
    vdir, pdir = write_artifacts(args.lib, L, D)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(args.model) / "tokenizer.json"))
    gpu = GpuMonitor(args.out / "nvidia_smi.csv")
    env = dict(os.environ)
    servers: dict[str, Server] = {}
    wanted = args.servers.split(",")
    try:
        if "lm" in wanted:
            p = free_port()
            servers["lm"] = Server("mlx_lm.server", [sys.executable, "-m", "mlx_lm", "server", "--model", args.model,
                                                      "--port", str(p), "--log-level", "WARNING"], p, logs, args.model, env)
        # Our server, and the same server with one change switched off, side by side.
        interp_variants = {
            "interp": ("mlx-interp", {}),
            "interp_nc": ("mlx-interp-uncompiled", {"MLX_INTERP_COMPILE": "0"}),  # the decode step uncompiled
            "interp_nf": ("mlx-interp-unfused", {"MLX_INTERP_FUSE": "0"}),  # q/k/v and gate/up as separate products
            "interp_nq": ("mlx-interp-rowwise", {"MLX_INTERP_FLAT_QMM": "0"}),  # quantized products row by row (mlx's own)
            # mlx's CUDA graphs: one per step instead of one per 100 kernels / 1000 MB of inputs
            "interp_g": ("mlx-interp-graph-1000", {"MLX_MAX_OPS_PER_BUFFER": "1000", "MLX_MAX_MB_PER_BUFFER": "100000"}),
            "interp_si": ("mlx-interp-switch-0.5ms", {"MLX_INTERP_SWITCH_INTERVAL": "0.0005"}),  # the GIL handed over sooner
            "interp_nk": ("mlx-interp-masked-sdpa", {"MLX_INTERP_DECODE_KERNEL": "0"}),  # mlx's masked attention fallback
        }
        for key, (name, switches) in interp_variants.items():
            if key in wanted:
                p = free_port()
                cmd = [sys.executable, "-m", "mlx_interp.cli", "serve", "--model", args.model, "--port", str(p), "--dtype", "native",
                       "--vectors", str(vdir), "--probes", str(pdir), "--log-level", "warning"] + args.interp_args.split()
                servers[key] = Server(name, cmd, p, logs, "default", dict(env, **switches))
        for k, s in servers.items():
            meta[f"{k}_cmd"] = " ".join(s.cmd)
            meta[f"{k}_ready_s"] = round(s.wait_ready(), 1)
            print(f"{s.name} ready after {meta[f'{k}_ready_s']}s", flush=True)
        if "interp" in servers:
            s = servers["interp"]
            meta["interp_models"] = httpx.get(s.url + "/v1/models").json()
            meta["interp_vectors"] = [v["name"] for v in httpx.get(s.url + "/v1/steering/vectors").json().get("data", [])]
            meta["interp_probes"] = [v["name"] for v in httpx.get(s.url + "/v1/probes").json().get("data", [])]
            print("interp vectors", meta["interp_vectors"], "probes", meta["interp_probes"], flush=True)
        # warm-up: first requests compile kernels and load weights lazily; every batch size 1..N passes here
        phases = args.phases.split(",")
        t = time.time()
        for k, s in servers.items():
            for attempt in ("w1", "w2"):
                r = stream_once(s, f"warm-up {attempt}. {BASE_PROMPT}", 32)
                print(f"warm-up {s.name} 1 stream: {r['completion_tokens']} tok, decode {r['decode_tps']} tok/s", flush=True)
            if "ttft" in phases:
                r = stream_once(s, long_prompt(tok, 1970, seed=999 + len(k)), 4)
                print(f"warm-up {s.name} long prompt: {r['prompt_tokens']} prompt tok, ttft {r['ttft_s']}", flush=True)
            for ph, n in (("conc8", 8), ("steer8", 8), ("conc32", 32)):
                if ph in phases and (ph != "steer8" or k.startswith("interp")):
                    r = concurrent(s, n, 24, f"warm-up {ph}")
                    print(f"warm-up {s.name} {n} clients: {r['agg_tps']:.1f} tok/s", flush=True)
            if k.startswith("interp") and ("steer1" in phases or "steer8" in phases):
                for v in ("steer", "probes", "steer+probes"):
                    r = stream_once(s, f"warm-up {v}. {BASE_PROMPT}", 16, VARIANTS[v])
                    print(f"warm-up {s.name} {v}: {r['completion_tokens']} tok, probe chunks {r['probe_chunks']}", flush=True)
                if "steer8" in phases:
                    r = concurrent(s, 8, 16, "warm-up steer8", VARIANTS["steer+probes"])
        meta["warmup_s"] = round(time.time() - t, 1)
        save()

        est: dict[str, float] = {}

        def measure(phase: str, key: str, variant: str, rep: int, fn):
            s = servers[key]
            guess = est.get(f"{phase}/{key}/{variant}", est.get(f"{phase}/{key}", 30.0))
            rec = {"phase": phase, "server": s.name, "variant": variant, "rep": rep}
            if guess * 1.15 > left():
                rec["skipped"] = f"needs ~{guess:.0f}s, {left():.0f}s left"
                print("skip", rec, flush=True)
                results.append(rec)
                save()
                return
            cpu0, w0, t0 = s.cpu_seconds(), time.time(), now()
            try:
                rec.update(fn(s))
            except Exception as exc:  # recorded, the run goes on
                rec["error"] = f"{type(exc).__name__}: {exc}"[:1500]
                rec["log_tail"] = s.tail(1500)
            took = now() - t0
            rec["took_s"] = round(took, 2)
            rec["server_cpu_s"] = round(s.cpu_seconds() - cpu0, 2)
            rec.update(gpu.window(w0, time.time()))
            est[f"{phase}/{key}/{variant}"] = took
            est[f"{phase}/{key}"] = max(est.get(f"{phase}/{key}", 0), took)
            results.append(rec)
            save()
            short = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rec.items() if k not in ("log_tail",)}
            print(json.dumps(short), flush=True)

        keys = [k for k in ("lm", "interp", "interp_nc", "interp_nf", "interp_nq", "interp_g", "interp_si", "interp_nk") if k in servers]
        variants = args.variants.split(",")
        for phase in phases:
            for rep in range(args.reps):
                order = keys if rep % 2 == 0 else keys[::-1]
                vorder = variants if rep % 2 == 0 else variants[::-1]
                if phase == "single":
                    for k in order:
                        measure(phase, k, "plain", rep, lambda s, rep=rep: stream_once(s, f"Single {rep}. {BASE_PROMPT}", args.tokens))
                elif phase == "ttft":
                    for i, k in enumerate(order):
                        prompt = long_prompt(tok, 1970, seed=100 * rep + i + (0 if k == "lm" else 50))
                        measure(phase, k, "plain", rep, lambda s, p=prompt: stream_once(s, p, 8))
                elif phase in ("conc8", "conc32"):
                    n = 8 if phase == "conc8" else 32
                    for k in order:
                        measure(phase, k, "plain", rep, lambda s, n=n, rep=rep: concurrent(s, n, args.tokens, f"{phase} {rep}"))
                elif phase in ("steer1", "steer8"):
                    for k in [k for k in order if k.startswith("interp")]:
                        for v in vorder:
                            if phase == "steer1":
                                def fn(s, v=v, rep=rep):
                                    return stream_once(s, f"Steer {rep}. {BASE_PROMPT}", args.tokens, VARIANTS[v])
                            else:
                                def fn(s, v=v, rep=rep):
                                    return concurrent(s, 8, args.tokens, f"steer8 {rep}", VARIANTS[v])
                            measure(phase, k, v, rep, fn)
        for k, s in servers.items():
            if s.proc.poll() is not None:
                meta[f"{k}_exited"] = s.proc.returncode
    finally:
        for s in servers.values():
            s.stop()
        gpu.stop()
        meta["total_s"] = round(time.time() - t_begin, 1)
        save()
    # summary
    print("\nsummary (mean of reps):")
    groups: dict[tuple, list] = {}
    for r in results:
        if "error" in r or "skipped" in r:
            continue
        groups.setdefault((r["phase"], r["server"], r["variant"]), []).append(r)
    for (ph, sv, var), rs in groups.items():
        def m(key):
            vals = [x[key] for x in rs if x.get(key) is not None]
            return round(statistics.mean(vals), 3) if vals else None
        print(ph, sv, var, {k: m(k) for k in ("decode_tps", "e2e_tps", "agg_tps", "ttft_s", "ttft_mean_s", "prompt_tokens",
                                                 "completion_tokens", "gpu_util_mean", "server_cpu_s")}, len(rs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
