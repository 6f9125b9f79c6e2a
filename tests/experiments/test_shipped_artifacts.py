"""The shipped green_red vector and the sycophancy and concession probes: loadable, and what the documented build produces."""

import numpy as np
import pytest

from mlx_interp.experiments.artifacts import PROBE_NAME, VECTOR_NAME, WORKING_PROBE_NAME, build_green_red
from mlx_interp.experiments.common import GREEN_RED_PAIRS, PROBE_LIBRARY, VECTOR_LIBRARY
from mlx_interp.probes.probe import Probe
from mlx_interp.probes.recipes import DATA_DIR, RECIPES, build
from mlx_interp.steering.analysis import cosine_by_layer
from mlx_interp.steering.artifacts import dataset_hash
from mlx_interp.steering.vectors import SteeringVector


def test_shipped_files_exist_and_record_their_datasets():
    vector = SteeringVector.load(VECTOR_LIBRARY / f"{VECTOR_NAME}.json")
    assert vector.metadata["dataset_hash"] == dataset_hash([GREEN_RED_PAIRS]), "vector is stale: rebuild it"
    assert vector.recommended_layers and vector.midpoints is not None
    for name in (PROBE_NAME, WORKING_PROBE_NAME):
        recipe = RECIPES[name]
        probe = Probe.load(PROBE_LIBRARY / f"{name}.json")
        meta = probe.metadata
        assert meta["dataset_hash"] == dataset_hash([DATA_DIR / recipe.data]), f"{name} is stale: rebuild it"
        assert meta["labels"] == list(recipe.labels) and probe.position == recipe.position
        assert meta["selection"]["method"] == "nested_cv" and meta["selection"]["band_declared_before_looking"]
        assert list(probe.layers) == recipe.layers(meta["num_layers"])
        low, high = meta["auroc_ci"]  # the held-out AUROC of the whole procedure, with its interval
        assert low <= meta["auroc"] <= high
        assert vector.metadata["model_fingerprint"] == meta["model_fingerprint"]
    concession = Probe.load(PROBE_LIBRARY / f"{WORKING_PROBE_NAME}.json")
    assert concession.per_token and set(concession.metadata["aggregate_thresholds"]) == {"mean", "max", "ema"}
    assert concession.metadata["auroc_ci"][0] > 0.8  # the probe the monitoring examples use does work


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
def test_rebuilt_sycophancy_probe_matches_shipped(default_lm):
    """`mlx-interp probes build sycophancy` on the default model gives the shipped probe (knowledge check included)."""
    shipped = Probe.load(PROBE_LIBRARY / f"{PROBE_NAME}.json", fingerprint=default_lm.fingerprint,
                         hidden_size=default_lm.hidden_size)
    rebuilt = build(PROBE_NAME, default_lm)
    old, new = shipped.metadata, rebuilt.metadata
    assert new["known_items"] == old["known_items"] and new["n_examples"] == old["n_examples"]
    assert new["best_layer"] == old["best_layer"]
    assert new["auroc"] == pytest.approx(old["auroc"], abs=0.02)
    k = shipped.layers.index(shipped.best_layer)
    assert np.allclose(rebuilt.weights[k], shipped.weights[k], atol=1e-3)
