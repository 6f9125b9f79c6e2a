"""One stream on mlx's CUDA backend under different CUDA-graph limits, each setting in a fresh process.

mlx's CUDA backend records the kernels of an evaluation into CUDA graphs and launches a graph once it
holds MLX_MAX_OPS_PER_BUFFER kernels or MLX_MAX_MB_PER_BUFFER megabytes of inputs (100 and 1000 on an
H100/H200); MLX_USE_CUDA_GRAPHS=0 launches kernels one by one. The values are read once per process,
so each setting runs `step_profile.py --only ...` in a process of its own; rounds alternate the order.

    python bench/gpu/graph_limits.py MODEL_DIR [--rounds 2] [--tokens 256] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SETTINGS = {
    "default": {},
    "ops1000_mb100000": {"MLX_MAX_OPS_PER_BUFFER": "1000", "MLX_MAX_MB_PER_BUFFER": "100000"},
    "ops300_mb100000": {"MLX_MAX_OPS_PER_BUFFER": "300", "MLX_MAX_MB_PER_BUFFER": "100000"},
    "ops40": {"MLX_MAX_OPS_PER_BUFFER": "40"},
    "no_graphs": {"MLX_USE_CUDA_GRAPHS": "0"},
}
VARIANTS = "mlx_lm,compiled,compiled_both"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    names = args.settings.split(",")
    script = Path(__file__).with_name("step_profile.py")
    runs: dict[str, list] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            env = {**os.environ, **SETTINGS[name]}
            proc = subprocess.run([sys.executable, str(script), args.model, "--tokens", str(args.tokens), "--reps", "2",
                                   "--only", VARIANTS, "--no-profile"], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(name, "failed:", proc.stderr[-2000:], flush=True)
                continue
            # the summary is the last JSON object step_profile prints (indented, so find its opening brace)
            text = proc.stdout
            summary = json.loads(text[text.rindex("\n{") + 1:])
            runs[name].append({k: round(v["tok_s"], 1) for k, v in summary.items()})
            print(r, name, json.dumps(runs[name][-1]), flush=True)
    print("\nmedian tok/s over rounds:")
    table = {n: {k: statistics.median(x[k] for x in v) for k in v[0]} for n, v in runs.items() if v}
    for n, row in table.items():
        print(f"{n:18}" + "  ".join(f"{k} {x:7.1f}" for k, x in row.items()))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "graph_limits.json").write_text(json.dumps({"settings": SETTINGS, "runs": runs, "median": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
