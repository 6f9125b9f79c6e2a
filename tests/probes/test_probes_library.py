"""ProbeLibrary: loading a folder, installing uploads, removing, and refusing escapes."""

import json
import threading

import numpy as np
import pytest

from mlx_interp.probes.probe import Probe, ProbeLibrary
from mlx_interp.steering.artifacts import ArtifactError

FP = "f" * 64


def _upload(probe):
    return probe.tensor_bytes(), dict(probe.metadata)


def test_load_all_serves_good_probes_and_reports_bad_ones(tmp_path, make_probe):
    make_probe(name="good").save(tmp_path)
    make_probe(name="other", layers=(0, 2)).save(tmp_path)
    make_probe(name="broken").save(tmp_path)
    (tmp_path / "broken.safetensors").unlink()
    (tmp_path / "wrongmodel.json").write_text("{}")
    lib = ProbeLibrary(tmp_path, fingerprint=FP, hidden_size=8, num_layers=4)
    errors = lib.load_all()
    assert lib.names() == ["good", "other"]
    assert sorted(e.path.rsplit("/", 1)[-1] for e in errors) == ["broken.safetensors", "wrongmodel.json"]
    assert lib.get("good").layers == (1, 3)
    with pytest.raises(KeyError):
        lib.get("broken")


def test_load_all_refuses_other_models(tmp_path, make_probe):
    make_probe(name="p").save(tmp_path)
    lib = ProbeLibrary(tmp_path, fingerprint="0" * 64)
    errors = lib.load_all()
    assert lib.names() == [] and "fingerprint" in str(errors[0])
    lib = ProbeLibrary(tmp_path, hidden_size=16)
    assert "hidden size" in str(lib.load_all()[0])


def test_missing_or_empty_folder_is_an_empty_library(tmp_path):
    assert ProbeLibrary(tmp_path / "none").load_all() == []
    lib = ProbeLibrary(tmp_path)
    assert lib.load_all() == [] and lib.names() == [] and lib.describe() == []


def test_describe_is_json_safe(tmp_path, make_probe):
    make_probe(name="p").save(tmp_path)
    lib = ProbeLibrary(tmp_path)
    lib.load_all()
    (entry,) = lib.describe()
    json.dumps(entry, allow_nan=False)
    assert entry["name"] == "p" and entry["sha256"] == lib.get("p").sha256


def test_install_writes_validated_files_and_serves_them(tmp_path, make_probe):
    lib = ProbeLibrary(tmp_path / "lib", fingerprint=FP, hidden_size=8, num_layers=4)
    data, meta = _upload(make_probe(name="up"))
    probe = lib.install("up", data, meta)
    assert lib.names() == ["up"] and probe.sha256 == lib.get("up").sha256
    assert Probe.load(tmp_path / "lib" / "up.json").sha256 == probe.sha256
    fresh = ProbeLibrary(tmp_path / "lib")
    assert fresh.load_all() == [] and fresh.names() == ["up"]


def test_install_takes_the_name_argument_when_metadata_has_none(tmp_path, make_probe):
    data, meta = _upload(make_probe(name="x"))
    del meta["name"]
    lib = ProbeLibrary(tmp_path)
    assert lib.install("x", data, meta).name == "x"


@pytest.mark.parametrize("name", ["../escape", "..", ".", "a/b", "/abs", "x" * 65, ""])
def test_install_refuses_names_that_leave_the_library(tmp_path, make_probe, name):
    root = tmp_path / "lib"
    root.mkdir()
    data, meta = _upload(make_probe())
    meta["name"] = name
    with pytest.raises(ArtifactError):
        ProbeLibrary(root).install(name, data, meta)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["lib"]


@pytest.mark.parametrize(
    "spoil,match",
    [
        (lambda d, m: (b"not safetensors", m), "safetensors"),
        (lambda d, m: (d, {**m, "threshold": 3}), "threshold"),
        (lambda d, m: (d, {**m, "name": "other"}), "differs"),
        (lambda d, m: (d, {**m, "threshold": float("nan")}), "strict JSON"),
        (lambda d, m: (d, {**m, "model_fingerprint": "0" * 64}), "fingerprint"),
        (lambda d, m: (d, {**m, "hidden_size": 16}), "hidden"),
        (lambda d, m: (d, "not a dict"), "JSON object"),
    ],
)
def test_install_refuses_invalid_uploads_and_writes_nothing(tmp_path, make_probe, spoil, match):
    lib = ProbeLibrary(tmp_path, fingerprint=FP, hidden_size=8, num_layers=4)
    data, meta = spoil(*_upload(make_probe(name="up")))
    with pytest.raises(ArtifactError, match=match):
        lib.install("up", data, meta)
    assert list(tmp_path.iterdir()) == [] and lib.names() == []


def test_install_refuses_nan_weights(tmp_path, make_probe):
    probe = make_probe(name="up")
    probe.weights[0, 0] = np.nan
    with pytest.raises(ArtifactError, match="NaN"):
        ProbeLibrary(tmp_path).install("up", *_upload(probe))


def test_install_overwrite_flag(tmp_path, make_probe):
    lib = ProbeLibrary(tmp_path)
    lib.install("up", *_upload(make_probe(name="up", seed=0)))
    with pytest.raises(FileExistsError):
        lib.install("up", *_upload(make_probe(name="up", seed=1)), overwrite=False)
    replaced = lib.install("up", *_upload(make_probe(name="up", seed=1)))
    assert lib.get("up").sha256 == replaced.sha256 == make_probe(name="up", seed=1).sha256


def test_remove_deletes_files_and_stops_serving(tmp_path, make_probe):
    lib = ProbeLibrary(tmp_path)
    lib.install("a", *_upload(make_probe(name="a")))
    lib.install("b", *_upload(make_probe(name="b")))
    lib.remove("a")
    assert lib.names() == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.safetensors"]
    with pytest.raises(KeyError):
        lib.remove("a")


@pytest.mark.parametrize("name", ["../b", "..", "a/../../b"])
def test_remove_refuses_escapes(tmp_path, make_probe, name):
    inner = tmp_path / "lib"
    make_probe(name="b").save(tmp_path)  # a probe outside the library that must survive
    lib = ProbeLibrary(inner)
    with pytest.raises(ArtifactError):
        lib.remove(name)
    assert (tmp_path / "b.json").exists() and (tmp_path / "b.safetensors").exists()


def test_add_serves_in_memory_and_validates(tmp_path, make_probe):
    lib = ProbeLibrary(tmp_path, hidden_size=8)
    lib.add(make_probe(name="mem"))
    assert lib.names() == ["mem"] and list(tmp_path.iterdir()) == []
    with pytest.raises(ArtifactError, match="hidden size"):
        ProbeLibrary(tmp_path, hidden_size=16).add(make_probe(name="mem"))


def test_readers_see_a_consistent_snapshot_while_writers_swap(tmp_path, make_probe):
    """Copy-on-write: a reader's dict is never mutated under it."""
    lib = ProbeLibrary(tmp_path)
    lib.add(make_probe(name="base"))
    snapshot = lib._probes
    errors = []

    def writer(i):
        try:
            lib.add(make_probe(name=f"p{i}"))
            lib.remove(f"p{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for _ in range(200):
        assert "base" in lib and lib.get("base").name == "base"
    for t in threads:
        t.join()
    assert errors == [] and list(snapshot) == ["base"] and lib.names() == ["base"]
