"""The shipped green_red vector and sycophancy probe: loadable, and what the documented build produces."""

import numpy as np
import pytest

from mlx_interp.experiments.artifacts import PROBE_NAME, VECTOR_NAME, build_green_red, build_sycophancy_probe, sycophancy_states
from mlx_interp.experiments.common import GREEN_RED_PAIRS, PROBE_LIBRARY, SYCOPHANCY, VECTOR_LIBRARY, read_jsonl
from mlx_interp.probes.probe import Probe
from mlx_interp.steering.analysis import cosine_by_layer
from mlx_interp.steering.artifacts import dataset_hash
from mlx_interp.steering.vectors import SteeringVector


def test_shipped_files_exist_and_record_their_datasets():
    vector = SteeringVector.load(VECTOR_LIBRARY / f"{VECTOR_NAME}.json")
    assert vector.metadata["dataset_hash"] == dataset_hash([GREEN_RED_PAIRS]), "vector is stale: rebuild it"
    assert vector.recommended_layers and vector.midpoints is not None
    probe = Probe.load(PROBE_LIBRARY / f"{PROBE_NAME}.json")
    meta = probe.metadata
    assert meta["dataset_hash"] == dataset_hash([SYCOPHANCY]), "probe is stale: rebuild it"
    assert meta["labels"] == ["GA", "SyA"]
    assert len(meta["per_layer"]) == meta["num_layers"]
    best = meta["per_layer"][meta["best_layer"]]
    assert best["auroc_mean"] > best["shuffled_auroc_mean"]
    assert vector.metadata["model_fingerprint"] == meta["model_fingerprint"]


@pytest.mark.integration
def test_rebuilt_vector_matches_shipped(default_lm):
    shipped = SteeringVector.load(VECTOR_LIBRARY / f"{VECTOR_NAME}.json", fingerprint=default_lm.fingerprint,
                                  hidden_size=default_lm.hidden_size)
    rebuilt = build_green_red(default_lm)
    layers = list(shipped.recommended_layers)
    assert list(rebuilt.recommended_layers) == layers
    cos = cosine_by_layer(rebuilt.directions[layers], shipped.directions[layers])
    assert np.all(cos > 0.99), cos
    # a fresh build is uncalibrated; the shipped one was calibrated (`vectors calibrate`), default = recommendation
    from mlx_interp.steering.extraction import UNCALIBRATED_ALPHA

    assert rebuilt.default_alpha == UNCALIBRATED_ALPHA and not rebuilt.calibrated
    assert shipped.calibrated and shipped.default_alpha == shipped.metadata["calibration"]["recommended_alpha"]


@pytest.mark.integration
def test_rebuilt_probe_matches_shipped(default_lm):
    shipped = Probe.load(PROBE_LIBRARY / f"{PROBE_NAME}.json", fingerprint=default_lm.fingerprint,
                         hidden_size=default_lm.hidden_size)
    rows = [r for r in read_jsonl(SYCOPHANCY) if r["condition"] in ("GA", "SyA")]
    held = [r for r in read_jsonl(SYCOPHANCY) if r["condition"] in ("SyPr", "neutral")][:24]
    X = sycophancy_states(default_lm, rows + held)
    # shuffles and bootstrap do not change the fitted weights or the CV means: skip them to keep this fast
    rebuilt = build_sycophancy_probe(default_lm, states=X[: len(rows)], rows=rows, n_shuffles=0, n_bootstrap=0)
    old, new = shipped.metadata, rebuilt.metadata
    assert abs(new["best_layer"] - old["best_layer"]) <= 1
    b = old["best_layer"]
    assert new["per_layer"][b]["auroc_mean"] == pytest.approx(old["per_layer"][b]["auroc_mean"], abs=0.02)
    assert new["per_layer"][b]["accuracy_mean"] == pytest.approx(old["per_layer"][b]["accuracy_mean"], abs=0.02)
    # the two probes read texts neither was trained on the same way
    k = shipped.layers.index(b)
    s_old = shipped.score_numpy(X[len(rows):])[:, k]
    s_new = rebuilt.score_numpy(X[len(rows):])[:, rebuilt.layers.index(b)]
    assert np.max(np.abs(s_old - s_new)) < 0.02
