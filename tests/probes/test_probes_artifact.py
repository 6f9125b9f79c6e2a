"""The probe file format: round trip, the reference scorer, and every way a file can be refused."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from probe_factory import build_probe
from mlx_interp.probes.probe import Probe
from mlx_interp.steering.artifacts import ArtifactError, content_sha256


def test_round_trip_keeps_tensors_metadata_and_sha(tmp_path, make_probe):
    probe = make_probe()
    json_path = probe.save(tmp_path)
    assert json_path == (tmp_path / "demo.json").resolve()
    assert (tmp_path / "demo.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = Probe.load(json_path)
    for attr in ("weights", "bias", "mean", "scale"):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(probe, attr))
    assert loaded.layers == (1, 3)
    assert loaded.metadata == json.loads(json_path.read_text())
    assert loaded.best_layer == 3 and loaded.threshold == 0.7 and loaded.aggregation == "mean"
    assert loaded.labels == ["honest", "sycophantic"]
    assert loaded.sha256 == probe.sha256 == content_sha256(loaded.tensors())
    # the safetensors file and the bare stem name the same artifact
    assert Probe.load(tmp_path / "demo.safetensors").sha256 == loaded.sha256
    assert Probe.load(tmp_path / "demo").sha256 == loaded.sha256


def test_dotted_names_resolve_their_own_files(tmp_path, make_probe):
    make_probe(name="a.b").save(tmp_path)
    assert Probe.load(tmp_path / "a.b.json").name == "a.b"
    assert Probe.load(tmp_path / "a.b").name == "a.b"


def test_sha_changes_with_weights(make_probe):
    assert make_probe(seed=0).sha256 != make_probe(seed=1).sha256


def test_load_accepts_the_matching_model(tmp_path, make_probe):
    path = make_probe().save(tmp_path)
    probe = Probe.load(path, fingerprint="f" * 64, hidden_size=8, num_layers=4)
    assert probe.hidden_size == 8


def test_score_numpy_matches_the_formula(make_probe):
    probe = make_probe()
    rng = np.random.default_rng(5)
    hidden = rng.normal(size=(3, 4, 8)).astype(np.float32)
    got = probe.score_numpy(hidden)
    assert got.shape == (3, 2)
    for n in range(3):
        for k, layer in enumerate(probe.layers):
            z = (hidden[n, layer] - probe.mean[k]) / probe.scale[k]
            expected = 1 / (1 + np.exp(-(z @ probe.weights[k] + probe.bias[k])))
            assert got[n, k] == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(probe.score_numpy(hidden[0]), got[0], rtol=1e-6)


def test_score_numpy_rejects_wrong_shapes(make_probe):
    probe = make_probe()
    with pytest.raises(ValueError, match="expected hidden"):
        probe.score_numpy(np.zeros((2, 4, 7)))
    with pytest.raises(ValueError, match="reads layer 3"):
        probe.score_numpy(np.zeros((2, 3, 8)))


def test_describe_is_json_safe(make_probe):
    d = make_probe().describe()
    json.dumps(d, allow_nan=False)
    assert d["best_layer"] == 3 and d["auroc"] == 0.95 and d["sha256"]


# -- refusals: each case breaks a valid saved probe in exactly one way -------------------------


def _saved(tmp_path, **kw):
    path = build_probe(**kw).save(tmp_path)
    return path, tmp_path / "demo.safetensors"


def _edit_meta(json_path, **changes):
    meta = json.loads(json_path.read_text())
    for key, value in changes.items():
        if value is _DROP:
            meta.pop(key)
        else:
            meta[key] = value
    json_path.write_text(json.dumps(meta))


def _edit_tensor(st_path, **changes):
    tensors = load_file(str(st_path))
    for key, value in changes.items():
        if value is _DROP:
            tensors.pop(key)
        else:
            tensors[key] = value(tensors[key]) if callable(value) else value
    save_file(tensors, str(st_path))


_DROP = object()


def _refused(path, match, **kw):
    with pytest.raises(ArtifactError, match=match) as info:
        Probe.load(path, **kw)
    assert str(path.parent) in str(info.value)  # the message names the file
    return info.value


def test_refuses_missing_json(tmp_path):
    _refused(tmp_path / "nothing.json", "file not found")


def test_refuses_missing_safetensors(tmp_path):
    path, st = _saved(tmp_path)
    st.unlink()
    err = _refused(path, "file not found")
    assert err.path.endswith("demo.safetensors")


def test_refuses_invalid_json(tmp_path):
    path, _ = _saved(tmp_path)
    path.write_text("{not json")
    _refused(path, "invalid JSON")


def test_refuses_nan_constant_in_json(tmp_path):
    path, _ = _saved(tmp_path)
    path.write_text(path.read_text().replace('"threshold": 0.7', '"threshold": NaN'))
    _refused(path, "invalid JSON")


def test_refuses_json_that_is_not_an_object(tmp_path):
    path, _ = _saved(tmp_path)
    path.write_text("[1, 2]")
    _refused(path, "JSON object")


def test_refuses_corrupt_safetensors(tmp_path):
    path, st = _saved(tmp_path)
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage")
    _refused(path, "safetensors")


@pytest.mark.parametrize("tensor", ["layers", "weights", "bias", "mean", "scale"])
def test_refuses_missing_tensor(tmp_path, tensor):
    path, st = _saved(tmp_path)
    _edit_tensor(st, **{tensor: _DROP})
    _refused(path, f"missing tensors: {tensor}")


def test_refuses_unexpected_tensor(tmp_path):
    path, st = _saved(tmp_path)
    _edit_tensor(st, extra=np.zeros(2, dtype=np.float32))
    _refused(path, "unexpected tensors")


@pytest.mark.parametrize("tensor", ["weights", "bias", "mean", "scale"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_refuses_non_finite_values(tmp_path, tensor, bad):
    path, st = _saved(tmp_path)

    def poison(a):
        a = a.copy()
        a.flat[0] = bad
        return a

    _edit_tensor(st, **{tensor: poison})
    _refused(path, f"{tensor} contains NaN or Inf")


@pytest.mark.parametrize(
    "tensor,shape",
    [("weights", (3, 8)), ("weights", (2,)), ("bias", (3,)), ("mean", (2, 7)), ("scale", (2, 9)), ("bias", (2, 1))],
)
def test_refuses_wrong_shapes(tmp_path, tensor, shape):
    path, st = _saved(tmp_path)
    _edit_tensor(st, **{tensor: np.ones(shape, dtype=np.float32)})
    _refused(path, "shape")


def test_refuses_weights_wider_than_hidden_size(tmp_path):
    path, st = _saved(tmp_path)
    _edit_tensor(st, weights=np.ones((2, 9), np.float32), mean=np.ones((2, 9), np.float32), scale=np.ones((2, 9), np.float32))
    _refused(path, "hidden_size 8 does not match the weights' 9")


def test_refuses_float_layer_indices(tmp_path):
    path, st = _saved(tmp_path)
    _edit_tensor(st, layers=np.array([1.0, 3.0], dtype=np.float32))
    _refused(path, "integer")


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_refuses_non_positive_scale(tmp_path, value):
    path, st = _saved(tmp_path)

    def spoil(a):
        a = a.copy()
        a[1, 2] = value
        return a

    _edit_tensor(st, scale=spoil)
    _refused(path, "scale must be > 0")


@pytest.mark.parametrize("layers", [[1, 4], [-1, 3], [1, 99]])
def test_refuses_layer_out_of_range(tmp_path, layers):
    path, st = _saved(tmp_path)
    _edit_tensor(st, layers=np.array(layers, dtype=np.int32))
    _edit_meta(path, best_layer=layers[0], per_layer=None)
    _refused(path, "out of range")


def test_refuses_layer_out_of_range_for_the_loading_model(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, num_layers=_DROP)
    _refused(path, "out of range", num_layers=3)


def test_refuses_duplicate_layers(tmp_path):
    path, st = _saved(tmp_path)
    _edit_tensor(st, layers=np.array([3, 3], dtype=np.int32))
    _edit_meta(path, per_layer=None)
    _refused(path, "duplicate layer")


def test_refuses_best_layer_not_among_layers(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, best_layer=2)
    _refused(path, "best_layer 2")


@pytest.mark.parametrize("threshold", [1.5, -0.1, "high", True, None])
def test_refuses_threshold_outside_unit_interval(tmp_path, threshold):
    path, _ = _saved(tmp_path)
    _edit_meta(path, threshold=threshold)
    _refused(path, "threshold")


def test_refuses_threshold_fpr_outside_unit_interval(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, threshold_fpr=2)
    _refused(path, "threshold_fpr")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "x" * 65, "sp ace", 7])
def test_refuses_bad_names(tmp_path, name):
    path, _ = _saved(tmp_path)
    _edit_meta(path, name=name)
    _refused(path, "not allowed")


def test_refuses_name_that_differs_from_the_file_stem(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, name="other")
    _refused(path, "does not match the file name")


def test_refuses_fingerprint_mismatch(tmp_path):
    path, _ = _saved(tmp_path)
    _refused(path, "fingerprint", fingerprint="a" * 64)


def test_refuses_hidden_size_mismatch(tmp_path):
    path, _ = _saved(tmp_path)
    _refused(path, "hidden size 8 does not match the model's 16", hidden_size=16)


def test_refuses_layer_count_mismatch(tmp_path):
    path, _ = _saved(tmp_path)
    _refused(path, "4 layers, this one has 6", num_layers=6)


@pytest.mark.parametrize("field", ["name", "labels", "method", "best_layer", "threshold", "hidden_size"])
def test_refuses_missing_required_field(tmp_path, field):
    path, _ = _saved(tmp_path)
    _edit_meta(path, **{field: _DROP})
    _refused(path, "missing|not allowed")


@pytest.mark.parametrize("labels", [["a"], ["a", "a"], ["a", 1], "ab", ["", "b"]])
def test_refuses_bad_labels(tmp_path, labels):
    path, _ = _saved(tmp_path)
    _edit_meta(path, labels=labels)
    _refused(path, "labels")


def test_refuses_unknown_method(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, method="svm")
    _refused(path, "method 'svm'")


def test_refuses_unknown_aggregation(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, aggregation="median")
    _refused(path, "aggregation 'median'")


def test_refuses_newer_format_version(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, format_version=99)
    _refused(path, "format_version")


def test_refuses_per_layer_that_does_not_match_layers(tmp_path):
    path, _ = _saved(tmp_path)
    _edit_meta(path, per_layer=[{"layer": 1}])
    _refused(path, "per_layer")


def test_save_refuses_an_invalid_probe(tmp_path, make_probe):
    probe = make_probe()
    probe.scale[0, 0] = 0
    with pytest.raises(ArtifactError, match="scale"):
        probe.save(tmp_path)
    assert not list(tmp_path.iterdir())
