"""`mlx-interp bench`: the core benchmark (prompt and decode throughput, steering and capture costs).

The measurement lives in mlx_interp/bench_core.py (installed with the package, so
this works from a wheel); bench/README.md has its numbers. This module only wires
it into the console script.
"""

from __future__ import annotations


def load_bench_core():
    """The benchmark module (imported only when the command runs: it is not needed for --help)."""
    from mlx_interp import bench_core

    return bench_core


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
