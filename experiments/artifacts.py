"""The shipped artifacts: the green_red vector and the sycophancy probe, rebuilt from the datasets.

    mlx-interp experiment build-artifacts --model default --out steering/library+probes/library

writes `DIR/vectors/green_red.*` and `DIR/probes/sycophancy.*` (or, with
--install, straight into the libraries the server loads by default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_interp.steering.artifacts import ArtifactError, dataset_hash

from .common import GREEN_RED_PAIRS, PROBE_LIBRARY, SYCOPHANCY, VECTOR_LIBRARY, read_jsonl

VECTOR_NAME = "green_red"
PROBE_NAME = "sycophancy"
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
    """Residual stream (N, L, D) at the last token of each chat (the end of the assistant answer)."""
    from mlx_interp.probes.training import row_tokens
    from mlx_interp.steering.capture import capture_hidden_states

    tokens = [row_tokens(lm, {"messages": r["messages"]}) for r in rows]
    return capture_hidden_states(lm, tokens, position="last", progress=progress)


def build_sycophancy_probe(lm, progress: bool = False, states: np.ndarray | None = None, rows: list[dict] | None = None, **train_kwargs):
    """SyA (positive) vs GA (negative) logistic probe, grouped 5-fold CV by item."""
    from mlx_interp.probes.training import train_probe

    if rows is None:
        rows = [r for r in read_jsonl(SYCOPHANCY) if r["condition"] in (PROBE_NEGATIVE, PROBE_POSITIVE)]
    X = states if states is not None else sycophancy_states(lm, rows, progress=progress)
    y = np.array([1 if r["condition"] == PROBE_POSITIVE else 0 for r in rows])
    return train_probe(
        X,
        y,
        [r["group"] for r in rows],
        PROBE_NAME,
        labels=(PROBE_NEGATIVE, PROBE_POSITIVE),
        model=lm,
        dataset_hash=dataset_hash([SYCOPHANCY]),
        description="Sycophantic agreement (the answer agrees with a wrong claim the user made) vs genuine agreement "
        "(the user was right). Read at the last token of the assistant answer. Built from probes/data/sycophancy.jsonl.",
        position="last",
        progress=progress,
        **train_kwargs,
    )


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
    probe = build_sycophancy_probe(lm, progress=progress)
    probe_path = probe.save(out_dir / "probes")
    best = next(p for p in probe.metadata["per_layer"] if p["layer"] == probe.best_layer)
    return {
        "vector": str(vector_path),
        "vector_layers": list(vector.recommended_layers),
        "vector_default_alpha": vector.default_alpha,
        "probe": str(probe_path),
        "probe_best_layer": probe.best_layer,
        "probe_cv_accuracy": best["accuracy_mean"],
        "probe_cv_auroc": best["auroc_mean"],
    }


def install(out_dir: Path) -> None:
    """Copy a build_all output into the shipped libraries."""
    import shutil

    out_dir = Path(out_dir)
    for sub, library, name in (("vectors", VECTOR_LIBRARY, VECTOR_NAME), ("probes", PROBE_LIBRARY, PROBE_NAME)):
        library.mkdir(parents=True, exist_ok=True)
        for suffix in (".safetensors", ".json"):  # json last: a library scan sees complete pairs only
            shutil.copyfile(out_dir / sub / f"{name}{suffix}", library / f"{name}{suffix}")
