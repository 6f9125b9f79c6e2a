"""`mlx-interp experiment NAME --model M --out DIR`: the four studies and the shipped-artifact build.

Each study writes DIR/NAME.json (results, with seed, model fingerprint and
versions) and DIR/NAME.png. `--quick` runs the reduced version CI uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

STUDIES = ("colour-swap", "sycophancy", "confound", "contamination")
COMMANDS = STUDIES + ("all", "build-artifacts", "report")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="run a study (colour-swap, sycophancy, confound, contamination) or rebuild the shipped artifacts",
        description="Reproduce the research toolkit's studies on any model, or rebuild the shipped green_red vector "
        "and sycophancy probe. Results: DIR/NAME.json and DIR/NAME.png.",
    )
    p.add_argument("name", choices=COMMANDS, metavar="NAME", help=f"one of: {', '.join(COMMANDS)} (report: print markdown tables of the results in --out)")
    p.add_argument("--model", default="default", help="'default', an mlx-lm directory, a repo id or a .gguf (default: default)")
    p.add_argument("--out", default="results", help="directory for results (default: ./results)")
    p.add_argument("--seed", type=int, default=0, help="seed for random directions, folds and resampling (default: 0)")
    p.add_argument("--quick", action="store_true", help="reduced run (fewer items, alphas, directions): checks the pipeline")
    p.add_argument("--install", action="store_true", help="build-artifacts: also copy the result into the shipped libraries")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def quick_configs(seed: int = 0) -> dict:
    """The reduced studies CI runs: every statistic computed, on few items."""
    from .colour_swap import ColourConfig
    from .confound import ConfoundConfig
    from .contamination import ContaminationConfig
    from .sycophancy import SycophancyConfig

    return {
        "colour-swap": ColourConfig(add_alphas=(1.0, 2.0), reflect_alphas=(1.0,), n_random=3, max_questions=12, max_controls=4, seed=seed),
        "sycophancy": SycophancyConfig(max_items=10, folds=3, n_shuffles=1, n_permutations=5, n_bootstrap=100, seed=seed,
                                       knowledge=False),
        "confound": ConfoundConfig(max_items=10, folds=3, n_bootstrap=100, seed=seed),
        "contamination": ContaminationConfig(max_prompts_per_domain=2, n_bootstrap=200, seed=seed),
    }


def full_configs(seed: int = 0) -> dict:
    from .colour_swap import ColourConfig
    from .confound import ConfoundConfig
    from .contamination import ContaminationConfig
    from .sycophancy import SycophancyConfig

    return {"colour-swap": ColourConfig(seed=seed), "sycophancy": SycophancyConfig(seed=seed),
            "confound": ConfoundConfig(seed=seed), "contamination": ContaminationConfig(seed=seed)}


def run_study(lm, name: str, out: Path, config, progress: bool = True) -> dict:
    from . import colour_swap, confound, contamination, sycophancy
    from .artifacts import vector_for

    if name == "colour-swap":
        return colour_swap.run(lm, vector_for(lm, progress=progress), out, config, progress=progress)
    module = {"sycophancy": sycophancy, "confound": confound, "contamination": contamination}[name]
    return module.run(lm, out, config, progress=progress)


def _run(args) -> int:
    from mlx_interp.steering.model import load_model

    progress = not args.no_progress
    out = Path(args.out)
    if args.name == "report":  # tables from results already in --out; no model needed
        from .report import render

        print(render(out))
        return 0
    lm = load_model(args.model, progress=progress)
    if args.install:
        from mlx_interp.steering.default_model import DEFAULT_MODEL_ID

        if args.name != "build-artifacts":
            raise ValueError("--install only applies to build-artifacts")
        if lm.model_id != DEFAULT_MODEL_ID:
            raise ValueError(f"--install replaces the artifacts shipped for {DEFAULT_MODEL_ID}; for {lm.model_id} keep them in --out")
    if args.name == "build-artifacts":
        from .artifacts import build_all, install

        summary = build_all(lm, out, progress=progress)
        if args.install:
            install(out)
            summary["installed"] = True
        print(json.dumps(summary, indent=2))
        return 0
    configs = quick_configs(args.seed) if args.quick else full_configs(args.seed)
    names = STUDIES if args.name == "all" else (args.name,)
    for name in names:
        t0 = time.time()
        run_study(lm, name, out, configs[name], progress=progress)
        stem = name.replace("-", "_")
        print(f"{name}: {out / (stem + '.json')} and {out / (stem + '.png')} ({time.time() - t0:.0f} s)")
    return 0
