"""Steering vector format: save/load round trip, every malformed file refused, the library."""

import json
import threading

import numpy as np
import pytest
from safetensors.numpy import save, save_file

from mlx_interp.steering.artifacts import ArtifactError
from mlx_interp.steering.interventions import Op, Scope
from mlx_interp.steering.vectors import SteeringVector, VectorLibrary, build_metadata, parse_layers

L, D = 6, 8
FP = "f" * 64


def make_vector(name="green_red", layers=(2, 3), alpha=2.5, seed=0, midpoints=True):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(L, D)).astype(np.float32)
    meta = build_metadata(
        name,
        hidden_size=D,
        num_layers=L,
        method="mean_diff",
        recommended_layers=layers,
        layer_norms=np.linspace(1, 6, L),
        default_alpha=alpha,
        model_id="tiny",
        model_fingerprint=FP,
        description="test vector",
        dataset_hash="0" * 64,
        extra={"separation": np.arange(L, dtype=np.float64)},
    )
    mids = rng.normal(size=L).astype(np.float32) if midpoints else None
    return SteeringVector(name=name, directions=directions, metadata=meta, midpoints=mids)


@pytest.fixture
def saved(tmp_path):
    vector = make_vector()
    path = vector.save(tmp_path)
    return vector, path


def rewrite_json(path, **changes):
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None and k.startswith("-"):
            meta.pop(k[1:])
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


# -- round trip -----------------------------------------------------------------


def test_save_load_round_trip(saved):
    vector, path = saved
    assert path.name == "green_red.json" and (path.parent / "green_red.safetensors").exists()
    loaded = SteeringVector.load(path, fingerprint=FP, hidden_size=D, num_layers=L)
    np.testing.assert_array_equal(loaded.directions, vector.directions)
    np.testing.assert_array_equal(loaded.midpoints, vector.midpoints)
    assert loaded.sha256 == vector.sha256
    assert loaded.recommended_layers == (2, 3)
    assert loaded.default_alpha == 2.5
    assert loaded.metadata["extra"]["separation"] == list(range(L))
    for key in ("format_version", "description", "model_id", "model_fingerprint", "hidden_size", "num_layers", "method", "layer_norms", "dataset_hash", "created"):
        assert key in loaded.metadata


@pytest.mark.parametrize("suffix", ["", ".json", ".safetensors"])
def test_load_accepts_either_file_or_stem(saved, suffix):
    vector, path = saved
    target = str(path)[: -len(".json")] + suffix
    assert SteeringVector.load(target).sha256 == vector.sha256


def test_dotted_names_are_stems_not_suffixes(tmp_path):
    vector = make_vector(name="calm.v2")
    vector.save(tmp_path)
    assert SteeringVector.load(tmp_path / "calm.v2").name == "calm.v2"


def test_sha256_depends_on_content_only():
    a, b = make_vector(seed=1), make_vector(seed=1)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    c = make_vector(seed=2)
    assert c.sha256 != a.sha256
    d = make_vector(seed=1, midpoints=False)
    assert d.sha256 != a.sha256


def test_save_leaves_no_temporary_files(tmp_path):
    make_vector().save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["green_red.json", "green_red.safetensors"]


def test_save_refuses_invalid_vector(tmp_path):
    vector = make_vector()
    vector.directions[2, 0] = np.nan
    with pytest.raises(ArtifactError, match="NaN"):
        vector.save(tmp_path)
    assert not list(tmp_path.iterdir())


# -- malformed files, one test each ---------------------------------------------------


def test_missing_json(saved):
    _, path = saved
    path.unlink()
    with pytest.raises(ArtifactError, match="file not found") as err:
        SteeringVector.load(path)
    assert err.value.path.endswith("green_red.json")


def test_missing_safetensors(saved):
    _, path = saved
    (path.parent / "green_red.safetensors").unlink()
    with pytest.raises(ArtifactError, match="file not found") as err:
        SteeringVector.load(path)
    assert err.value.path.endswith("green_red.safetensors")


def test_bad_json(saved):
    _, path = saved
    path.write_text("{not json")
    with pytest.raises(ArtifactError, match="invalid JSON"):
        SteeringVector.load(path)


def test_nan_in_json(saved):
    _, path = saved
    path.write_text(path.read_text().replace('"default_alpha": 2.5', '"default_alpha": NaN'))
    with pytest.raises(ArtifactError, match="NaN"):
        SteeringVector.load(path)


def test_missing_fields(saved):
    _, path = saved
    rewrite_json(path, **{"-layer_norms": None, "-default_alpha": None})
    with pytest.raises(ArtifactError, match="missing layer_norms, default_alpha"):
        SteeringVector.load(path)


def test_nan_in_tensor(saved):
    vector, path = saved
    bad = vector.directions.copy()
    bad[1, 1] = np.inf
    save_file({"directions": bad}, str(path.parent / "green_red.safetensors"))
    with pytest.raises(ArtifactError, match="directions contains NaN or Inf"):
        SteeringVector.load(path)


def test_nan_in_midpoints(saved):
    vector, path = saved
    mids = vector.midpoints.copy()
    mids[0] = np.nan
    save_file({"directions": vector.directions, "midpoints": mids}, str(path.parent / "green_red.safetensors"))
    with pytest.raises(ArtifactError, match="midpoints contains NaN"):
        SteeringVector.load(path)


def test_wrong_shape(saved):
    vector, path = saved
    save_file({"directions": vector.directions[:, :5].copy()}, str(path.parent / "green_red.safetensors"))
    with pytest.raises(ArtifactError, match=r"shape \(6, 5\), expected \(num_layers=6, hidden_size=8\)"):
        SteeringVector.load(path)


def test_wrong_dtype(saved):
    vector, path = saved
    save_file({"directions": vector.directions.astype(np.float16)}, str(path.parent / "green_red.safetensors"))
    with pytest.raises(ArtifactError, match="must be float32, got float16"):
        SteeringVector.load(path)


def test_missing_directions_tensor(saved):
    vector, path = saved
    save_file({"other": vector.directions}, str(path.parent / "green_red.safetensors"))
    with pytest.raises(ArtifactError, match="no 'directions' tensor"):
        SteeringVector.load(path)


def test_corrupt_safetensors(saved):
    _, path = saved
    (path.parent / "green_red.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        SteeringVector.load(path)


def test_bad_name(tmp_path):
    vector = make_vector()
    vector.save(tmp_path)
    for stem_file in list(tmp_path.iterdir()):
        stem_file.rename(tmp_path / stem_file.name.replace("green_red", "bad name!"))
    rewrite_json(tmp_path / "bad name!.json", name="bad name!")
    with pytest.raises(ArtifactError, match="not allowed"):
        SteeringVector.load(tmp_path / "bad name!.json")


def test_name_stem_mismatch(saved):
    _, path = saved
    rewrite_json(path, name="other")
    with pytest.raises(ArtifactError, match="does not match the file name 'green_red'"):
        SteeringVector.load(path)


def test_fingerprint_mismatch(saved):
    _, path = saved
    with pytest.raises(ArtifactError, match="fingerprint"):
        SteeringVector.load(path, fingerprint="a" * 64)


def test_hidden_size_mismatch(saved):
    _, path = saved
    with pytest.raises(ArtifactError, match="hidden size 8 does not match the model's 16"):
        SteeringVector.load(path, hidden_size=16)


def test_layer_count_mismatch(saved):
    _, path = saved
    with pytest.raises(ArtifactError, match="layer count 6 does not match the model's 30"):
        SteeringVector.load(path, num_layers=30)


def test_recommended_layer_out_of_range(saved):
    _, path = saved
    rewrite_json(path, recommended_layers=[2, 9])
    with pytest.raises(ArtifactError, match="recommended layer 9 is out of range"):
        SteeringVector.load(path)


def test_layer_norms_wrong_length(saved):
    _, path = saved
    rewrite_json(path, layer_norms=[1.0, 2.0])
    with pytest.raises(ArtifactError, match="layer_norms"):
        SteeringVector.load(path)


def test_future_format_version(saved):
    _, path = saved
    rewrite_json(path, format_version=99)
    with pytest.raises(ArtifactError, match="format_version 99"):
        SteeringVector.load(path)


# -- layers and interventions -------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [("8-10", (8, 9, 10)), ("all", tuple(range(12))), ([3, 1, 3], (1, 3)), (5, (5,)), ("2,4-5", (2, 4, 5)), (" 7 ", (7,))],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, 12) == expected


@pytest.mark.parametrize("spec, message", [("8-20", "'8-20': 12 is out of range; the model has layers 0-11"), ("x", "not understood"), ([], "empty"), (True, "ints"), ("9-3", "not understood"), (-1, "-1 is out of range"), ([1.5], "ints"), (None, "ints")])
def test_parse_layers_errors_name_the_value(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_layers(spec, 12)


def test_parse_layers_refuses_a_huge_range_before_expanding_it():
    """A request's "layers": "0-999999999999" is a one-line 400, not a list of a trillion ints (MemoryError, a 500)."""
    with pytest.raises(ValueError, match="'0-999999999999': 12 is out of range"):
        parse_layers("0-999999999999", 12)
    with pytest.raises(ValueError, match="'3,20-30': 20 is out of range"):
        parse_layers("3,20-30", 12)


def test_intervention_defaults():
    vector = make_vector()
    iv = vector.intervention()
    assert iv.op is Op.ADD and iv.alpha == 2.5 and iv.layers == (2, 3) and iv.scope is Scope.ALL
    assert iv.key == vector.sha256 and iv.name == "green_red"
    assert iv.midpoints is vector.midpoints
    # ablate / reflect: alpha is a fraction of the component, default 1 (not default_alpha)
    assert vector.intervention(op="reflect").alpha == 1.0
    assert vector.intervention(op="ablate", alpha=0.5).alpha == 0.5


def test_intervention_arguments():
    vector = make_vector()
    iv = vector.intervention(-1.0, op="clamp", layers="1-3", scope="generation", value=4.0)
    assert iv.layers == (1, 2, 3) and iv.value == 4.0 and iv.scope is Scope.GENERATION
    assert vector.intervention(layers="all").layers == tuple(range(L))
    with pytest.raises(ValueError, match="'2-9'"):
        vector.intervention(layers="2-9")
    with pytest.raises(ValueError, match="needs a value"):
        vector.intervention(op="clamp")
    with pytest.raises(ValueError, match="op 'push'"):
        vector.intervention(op="push")
    with pytest.raises(ValueError, match="alpha"):
        vector.intervention(float("nan"))


# -- the library ----------------------------------------------------------------------------


def test_library_load_all_skips_bad_files(tmp_path):
    make_vector("a").save(tmp_path)
    make_vector("b", seed=3).save(tmp_path)
    (tmp_path / "broken.json").write_text("{")
    lib = VectorLibrary(tmp_path, fingerprint=FP, hidden_size=D, num_layers=L)
    errors = lib.load_all()
    assert lib.names() == ["a", "b"]
    assert len(errors) == 1 and "broken.json" in str(errors[0])
    assert lib.get("b").sha256 == make_vector("b", seed=3).sha256
    with pytest.raises(KeyError):
        lib.get("c")


def test_library_refuses_other_model(tmp_path):
    make_vector("a").save(tmp_path)
    lib = VectorLibrary(tmp_path, hidden_size=D + 1)
    errors = lib.load_all()
    assert lib.names() == [] and "hidden size" in str(errors[0])


def test_library_missing_root_is_empty(tmp_path):
    lib = VectorLibrary(tmp_path / "nope")
    assert lib.load_all() == [] and lib.names() == [] and lib.describe() == []


def test_library_describe_is_json_safe(tmp_path):
    make_vector("a").save(tmp_path)
    lib = VectorLibrary(tmp_path)
    lib.load_all()
    (entry,) = lib.describe()
    assert entry["name"] == "a" and entry["sha256"] == lib.get("a").sha256 and entry["recommended_layers"] == [2, 3]
    json.dumps(entry, allow_nan=False)


def test_install_validates_and_writes(tmp_path):
    lib = VectorLibrary(tmp_path, fingerprint=FP, hidden_size=D, num_layers=L)
    source = make_vector("uploaded")
    data = save({"directions": source.directions, "midpoints": source.midpoints})
    installed = lib.install("uploaded", data, dict(source.metadata))
    assert installed.sha256 == source.sha256 and lib.names() == ["uploaded"]
    assert SteeringVector.load(tmp_path / "uploaded.json").sha256 == source.sha256
    # a fresh library sees it too
    other = VectorLibrary(tmp_path)
    other.load_all()
    assert other.names() == ["uploaded"]


def test_install_path_escaping_the_library(tmp_path):
    lib = VectorLibrary(tmp_path / "lib")
    source = make_vector("x")
    data = save({"directions": source.directions})
    for name in ("../x", "..", "a/b", "/etc/passwd"):
        meta = dict(source.metadata, name=name)
        with pytest.raises(ArtifactError):
            lib.install(name, data, meta)
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "lib").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("nan", "NaN"),
        ("shape", "shape"),
        ("bytes", "not a valid safetensors"),
        ("hidden", "hidden size"),
        ("fingerprint", "fingerprint"),
        ("layers", "layer count"),
        ("meta_name", "does not match"),
    ],
)
def test_install_refuses_bad_uploads_without_writing(tmp_path, case, message):
    lib = VectorLibrary(tmp_path, fingerprint=FP, hidden_size=D, num_layers=L)
    source = make_vector("up")
    directions, meta = source.directions.copy(), dict(source.metadata)
    if case == "nan":
        directions[0, 0] = np.nan
    elif case == "shape":
        directions = directions[:3].copy()
    elif case == "hidden":
        lib.hidden_size = D * 2
    elif case == "fingerprint":
        meta["model_fingerprint"] = "b" * 64
    elif case == "layers":
        lib.num_layers = L + 1
    elif case == "meta_name":
        meta["name"] = "other"
    data = b"junk" if case == "bytes" else save({"directions": directions})
    with pytest.raises(ArtifactError, match=message):
        lib.install("up", data, meta)
    assert list(tmp_path.iterdir()) == [] and lib.names() == []


def test_remove(tmp_path):
    lib = VectorLibrary(tmp_path)
    lib.add(make_vector("a"))
    lib.add(make_vector("b"))
    lib.remove("a")
    assert lib.names() == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "b.safetensors"]
    with pytest.raises(KeyError):
        lib.remove("a")


def test_readers_see_whole_mappings_during_writes(tmp_path):
    """A reader thread never sees a name listed without its vector while writers install and remove."""
    lib = VectorLibrary(tmp_path)
    lib.add(make_vector("stable"))
    stop = threading.Event()
    problems = []

    def reader():
        while not stop.is_set():
            for name in lib.names():
                try:
                    vector = lib.get(name)
                except KeyError:
                    continue  # removed between names() and get(): allowed, a stale listing
                if vector.name != name:
                    problems.append(name)
            if "stable" not in lib.names():
                problems.append("stable vanished")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(20):
            lib.add(make_vector(f"v{i}", seed=i))
            if i % 2:
                lib.remove(f"v{i - 1}")
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert len(lib.names()) == 11
