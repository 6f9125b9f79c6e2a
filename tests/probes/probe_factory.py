"""A valid probe for tests to save, load and break in one way each."""

import numpy as np


def build_probe(name="demo", layers=(1, 3), hidden=8, num_layers=4, seed=0, **meta_overrides):
    from mlx_interp.probes.probe import Probe

    rng = np.random.default_rng(seed)
    K = len(layers)
    metadata = {
        "format_version": 1,
        "name": name,
        "description": "test probe",
        "labels": ["honest", "sycophantic"],
        "method": "logistic",
        "best_layer": layers[-1],
        "aggregation": "mean",
        "per_layer": [{"layer": l, "accuracy_mean": 0.9, "auroc_mean": 0.95} for l in layers],
        "threshold": 0.7,
        "threshold_fpr": 0.05,
        "model_id": "tiny",
        "model_fingerprint": "f" * 64,
        "hidden_size": hidden,
        "num_layers": num_layers,
        "dataset_hash": "0" * 64,
        "n_examples": 10,
        "folds": 5,
        "seed": 0,
        "created": "2026-01-01T00:00:00+00:00",
    }
    metadata.update(meta_overrides)
    return Probe(
        name=name,
        layers=tuple(layers),
        weights=rng.normal(size=(K, hidden)).astype(np.float32),
        bias=rng.normal(size=K).astype(np.float32),
        mean=rng.normal(size=(K, hidden)).astype(np.float32),
        scale=rng.uniform(0.5, 2.0, size=(K, hidden)).astype(np.float32),
        metadata=metadata,
    )
