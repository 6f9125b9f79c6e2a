"""The shipped artifacts: the green_red vector and the sycophancy and concession probes, rebuilt from the datasets.

    mlx-interp experiment build-artifacts --model default --out DIR

writes `DIR/vectors/green_red.*` and `DIR/probes/{sycophancy,concession}.*` (or,
with --install, straight into the libraries the server loads by default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_interp.steering.artifacts import ArtifactError, dataset_hash

from .common import GREEN_RED_PAIRS, PROBE_LIBRARY, SYCOPHANCY, VECTOR_LIBRARY, read_jsonl

VECTOR_NAME = "green_red"
PROBE_NAME = "sycophancy"
WORKING_PROBE_NAME = "concession"
PROBE_NAMES = (PROBE_NAME, WORKING_PROBE_NAME)
PROBE_NEGATIVE, PROBE_POSITIVE = "GA", "SyA"


def build_green_red(lm, progress: bool = False):
    """Mean-difference vector from the red (positive) and green (negative) pairs, raw text, last token."""
    from mlx_interp.steering.extraction import build_vector, read_pairs

    return build_vector(
        lm,
        read_pairs(GREEN_RED_PAIRS),
        VECTOR_NAME,
        method="mean_diff",
        position="last",
        chat=False,
        description="Points from green to red: add with alpha > 0 pushes answers toward red, alpha < 0 toward green "
        "(alpha = total shift across the steered layers in red-minus-green class-mean differences); reflect at alpha 1 "
        "mirrors about the class midpoint. Built from steering/data/green_red.jsonl.",
        progress=progress,
        dataset_paths=[GREEN_RED_PAIRS],
    )


def sycophancy_states(lm, rows: list[dict], progress: bool = False) -> np.ndarray:
    """Residual stream (N, L, D) at the last token of each chat (after the end of the assistant answer).

    What the decomposition and confound studies read; the shipped probe reads
    elsewhere (probes.recipes, at the last prompt token).
    """
    from mlx_interp.probes.training import row_tokens
    from mlx_interp.steering.capture import capture_hidden_states

    tokens = [row_tokens(lm, {"messages": r["messages"]}) for r in rows]
    return capture_hidden_states(lm, tokens, position="last", progress=progress)


def build_sycophancy_probe(lm, progress: bool = False):
    """SyA (positive) vs GA (negative) on the items lm knows, at the last prompt token (probes.recipes)."""
    from mlx_interp.probes.recipes import build

    return build(PROBE_NAME, lm, progress=progress)


def build_concession_probe(lm, progress: bool = False):
    """The probe that works on the default model: concedes vs holds, per token (probes.recipes)."""
    from mlx_interp.probes.recipes import build

    return build(WORKING_PROBE_NAME, lm, progress=progress)


def shipped_vector(lm):
    """The shipped green_red vector if it was built for this model, else None."""
    from mlx_interp.steering.vectors import SteeringVector

    try:
        return SteeringVector.load(VECTOR_LIBRARY / f"{VECTOR_NAME}.json", fingerprint=lm.fingerprint,
                                   hidden_size=lm.hidden_size, num_layers=lm.num_layers)
    except (ArtifactError, FileNotFoundError):
        return None


def vector_for(lm, progress: bool = False):
    """The shipped vector when it matches lm, otherwise one built now from the same pairs."""
    return shipped_vector(lm) or build_green_red(lm, progress=progress)


def build_all(lm, out_dir: Path, progress: bool = True) -> dict:
    """Build both artifacts into out_dir/vectors and out_dir/probes; returns a short summary."""
    out_dir = Path(out_dir)
    vector = build_green_red(lm, progress=progress)
    vector_path = vector.save(out_dir / "vectors")
    summary = {
        "vector": str(vector_path),
        "vector_layers": list(vector.recommended_layers),
        "vector_default_alpha": vector.default_alpha,
    }
    for build in (build_sycophancy_probe, build_concession_probe):
        probe = build(lm, progress=progress)
        summary[probe.name] = {
            "path": str(probe.save(out_dir / "probes")),
            "position": probe.position,
            "best_layer": probe.best_layer,
            "heldout_auroc": probe.metadata["auroc"],
            "heldout_auroc_ci": probe.metadata["auroc_ci"],
        }
    return summary


def install(out_dir: Path) -> None:
    """Copy a build_all output into the shipped libraries."""
    import shutil

    out_dir = Path(out_dir)
    targets = [("vectors", VECTOR_LIBRARY, VECTOR_NAME)] + [("probes", PROBE_LIBRARY, n) for n in PROBE_NAMES]
    for sub, library, name in targets:
        library.mkdir(parents=True, exist_ok=True)
        for suffix in (".safetensors", ".json"):  # json last: a library scan sees complete pairs only
            shutil.copyfile(out_dir / sub / f"{name}{suffix}", library / f"{name}{suffix}")
