"""`mlx-interp bench`: the core benchmark (prompt and decode throughput, steering and capture costs).

The measurement lives in bench/bench_core.py, next to its README and numbers;
this module only wires it into the console script.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH_SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_core.py"


def load_bench_core():
    """bench/bench_core.py as a module (it is a script in the source tree, not an installed package)."""
    if not BENCH_SCRIPT.is_file():
        raise FileNotFoundError(f"the benchmark script {BENCH_SCRIPT} is missing; `mlx-interp bench` runs from a source checkout")
    name = "mlx_interp_bench_core"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure prompt/decode speed and the cost of steering and capture",
        description=(
            "Prompt and decode tokens/s of a model in the default configuration, with 4-bit weights and "
            "mlx's reference BLAS, and with an intervention and/or capture on every layer. Cases run "
            "interleaved in worker processes; medians and ratios to the default are printed."
        ),
    )
    parser.add_argument("--model", default="default", help="model to measure (default: %(default)s)")
    parser.add_argument("--tokens", type=int, default=None, help="decode steps per run (default 32; --quick: 8)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 5; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run rather than a measurement")
    parser.add_argument("--cases", default=None, help="comma-separated subset of: native-ref, default, hooked, add-all, capture-all, add+capture")
    parser.add_argument("--json", default=None, help="also write the raw samples to this JSON file")
    parser.add_argument(
        "--paired", action="store_true", help="also time hooked and plain decode steps alternately in one process (overheads under load)"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    core = load_bench_core()
    core.run_from_args(args)
    return 0
