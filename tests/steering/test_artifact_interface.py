"""Vectors and probes share one artifact interface, and sha256 means the same for both: the tensors' content."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load, save

from mlx_interp.probes.probe import Probe
from mlx_interp.steering.artifacts import Artifact, ArtifactError, content_sha256
from mlx_interp.steering.vectors import SteeringVector, build_metadata

L, D = 4, 8


def _vector(seed=0) -> SteeringVector:
    rng = np.random.default_rng(seed)
    meta = build_metadata("v", hidden_size=D, num_layers=L, method="random", recommended_layers=[1, 2],
                          default_alpha=1.0, model_id="m", model_fingerprint="f" * 16, description="")
    return SteeringVector(name="v", directions=rng.standard_normal((L, D)).astype(np.float32), metadata=meta)


def _probe(seed=0) -> Probe:
    rng = np.random.default_rng(seed)
    return Probe(
        name="p", layers=(1, 2), weights=rng.standard_normal((2, D)).astype(np.float32), bias=np.zeros(2, np.float32),
        mean=np.zeros((2, D), np.float32), scale=np.ones((2, D), np.float32),
        metadata={"format_version": 1, "name": "p", "labels": ["no", "yes"], "method": "logistic", "best_layer": 2,
                  "threshold": 0.5, "aggregation": "mean", "hidden_size": D, "num_layers": L, "model_fingerprint": "f" * 16},
    )


@pytest.mark.parametrize("make", [_vector, _probe], ids=["vector", "probe"])
def test_both_kinds_are_artifacts_with_one_sha256_meaning(make, tmp_path):
    artifact = make()
    assert isinstance(artifact, Artifact)
    assert artifact.sha256 == content_sha256(artifact.tensors())
    assert artifact.describe()["sha256"] == artifact.sha256
    artifact.validate()
    artifact.validate(hidden_size=D, num_layers=L, fingerprint="f" * 16)
    with pytest.raises(ArtifactError, match="hidden"):
        artifact.validate(hidden_size=D + 1)
    json_path = artifact.save(tmp_path)
    loaded = type(artifact).load(json_path)
    assert loaded.sha256 == artifact.sha256
    # the same tensors serialised differently (another key order, extra header metadata) keep their identity
    tensor_file = json_path.with_name(json_path.name.replace(".json", ".safetensors"))
    tensors = load(tensor_file.read_bytes())
    reordered = save(dict(reversed(list(tensors.items()))), metadata={"written_by": "another tool"})
    assert reordered != tensor_file.read_bytes()
    assert content_sha256(load(reordered)) == artifact.sha256
    assert make(seed=1).sha256 != artifact.sha256


def test_content_sha256_sees_name_dtype_and_shape():
    a = np.arange(6, dtype=np.float32)
    base = content_sha256({"x": a})
    assert content_sha256({"y": a}) != base
    assert content_sha256({"x": a.astype(np.float64)}) != base
    assert content_sha256({"x": a.reshape(2, 3)}) != base
    assert content_sha256({"x": a.astype(">f4")}) == base  # byte order is normalised: the values are the same
