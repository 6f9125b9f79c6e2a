"""llama.cpp / repeng control vectors: round trip, layer mapping, refusals."""

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter

from mlx_interp.steering.artifacts import ArtifactError
from mlx_interp.steering.control_gguf import export_gguf, import_gguf
from mlx_interp.steering.vectors import SteeringVector, build_metadata

L, D = 6, 8


def make_vector(layers=(2, 3, 4)):
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(L, D)).astype(np.float32)
    meta = build_metadata(
        "green_red",
        hidden_size=D,
        num_layers=L,
        method="pca",
        recommended_layers=layers,
        layer_norms=np.arange(1, L + 1),
        default_alpha=3.25,
        model_id="tiny-llama",
        model_fingerprint="c" * 64,
        description="green to red",
        dataset_hash="d" * 64,
    )
    return SteeringVector("green_red", directions, meta, midpoints=rng.normal(size=L).astype(np.float32))


def write_control_vector(path, tensors, arch="controlvector", hint="llama"):
    """A control vector the way repeng / llama.cpp write it: no mlx_interp keys."""
    writer = GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", hint)
    writer.add_int32(f"{arch}.layer_count", len(tensors))
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_round_trip(tmp_path):
    vector = make_vector()
    out = tmp_path / "v.gguf"
    assert export_gguf(vector, out) == (2, 3, 4)
    back = import_gguf(out, "green_red", hidden_size=D, num_layers=L)
    for layer in (2, 3, 4):
        np.testing.assert_array_equal(back.directions[layer], vector.directions[layer])
    assert not back.directions[[0, 1, 5]].any()  # layers not exported stay zero
    assert back.recommended_layers == (2, 3, 4)
    assert back.default_alpha == 3.25
    np.testing.assert_allclose(back.midpoints, vector.midpoints)
    np.testing.assert_allclose(back.metadata["layer_norms"], vector.metadata["layer_norms"])
    for key in ("model_id", "model_fingerprint", "dataset_hash", "description", "method"):
        assert back.metadata[key] == vector.metadata[key]
    # and the imported vector is a valid artifact
    SteeringVector.load(back.save(tmp_path / "lib"), fingerprint="c" * 64, hidden_size=D, num_layers=L)


def test_export_writes_llama_cpp_layout(tmp_path):
    vector = make_vector()
    out = tmp_path / "v.gguf"
    export_gguf(vector, out, model_hint="llama", layers="all")
    reader = GGUFReader(str(out))
    names = [t.name for t in reader.tensors]
    assert names == [f"direction.{l}" for l in range(1, L)]  # layer 0 has no llama.cpp slot
    arch = reader.get_field("general.architecture")
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    hint = reader.get_field("controlvector.model_hint")
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    count = reader.get_field("controlvector.layer_count")
    assert int(count.parts[count.data[0]][0]) == L - 1
    for t in reader.tensors:
        np.testing.assert_array_equal(np.asarray(t.data), vector.directions[int(t.name.split(".")[1])])


def test_export_scale_and_layer0_refusal(tmp_path):
    vector = make_vector(layers=(0, 1))
    with pytest.raises(ValueError, match="layer 0"):
        export_gguf(vector, tmp_path / "v.gguf")
    export_gguf(vector, tmp_path / "v.gguf", layers="1-2", scale=2.0)
    back = import_gguf(tmp_path / "v.gguf", "v")
    np.testing.assert_allclose(back.directions[1], 2 * vector.directions[1])
    assert back.default_alpha == pytest.approx(3.25 / 2)


def test_import_repeng_style_file_maps_direction_n_to_block_n(tmp_path):
    path = tmp_path / "repeng.gguf"
    rows = {n: np.full(D, float(n), dtype=np.float32) for n in (1, 3, 4)}
    write_control_vector(path, {f"direction.{n}": v for n, v in rows.items()})
    vector = import_gguf(path, "calm")
    assert vector.num_layers == 5 and vector.hidden_size == D  # up to the highest direction
    for n, row in rows.items():
        np.testing.assert_array_equal(vector.directions[n], row)
    assert vector.recommended_layers == (1, 3, 4)
    assert vector.default_alpha == 1.0 and vector.midpoints is None
    assert vector.metadata["model_id"] == "llama" and vector.metadata["extra"]["model_hint"] == "llama"
    # with the model's dimensions the matrix has the model's layer count
    assert import_gguf(path, "calm", hidden_size=D, num_layers=12).directions.shape == (12, D)


def test_import_f16_directions(tmp_path):
    path = tmp_path / "half.gguf"
    write_control_vector(path, {"direction.2": np.linspace(-1, 1, D).astype(np.float16)})
    vector = import_gguf(path, "half")
    assert vector.directions.dtype == np.float32
    np.testing.assert_allclose(vector.directions[2], np.linspace(-1, 1, D), atol=1e-3)


def test_import_with_a_model_records_it(tiny_llama, tmp_path):
    path = tmp_path / "m.gguf"
    write_control_vector(path, {"direction.1": np.ones(tiny_llama.hidden_size, dtype=np.float32)})
    vector = import_gguf(path, "m", tiny_llama)
    assert vector.num_layers == tiny_llama.num_layers
    assert vector.metadata["model_fingerprint"] == tiny_llama.fingerprint
    assert vector.metadata["model_id"] == tiny_llama.model_id


def test_refuses_non_control_vector(tmp_path):
    path = tmp_path / "model.gguf"
    write_control_vector(path, {"direction.1": np.ones(D, dtype=np.float32)}, arch="llama")
    with pytest.raises(ArtifactError, match="not a control vector"):
        import_gguf(path, "x")


def test_refuses_non_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"definitely not gguf" * 10)
    with pytest.raises(ArtifactError, match="not a GGUF file"):
        import_gguf(path, "x")


def test_refuses_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        import_gguf(tmp_path / "absent.gguf", "x")


def test_refuses_layer_out_of_range(tmp_path):
    path = tmp_path / "v.gguf"
    write_control_vector(path, {"direction.7": np.ones(D, dtype=np.float32)})
    with pytest.raises(ArtifactError, match="direction.7 is for layer 7 but the model has layers 0-5"):
        import_gguf(path, "x", hidden_size=D, num_layers=6)


def test_refuses_direction_zero(tmp_path):
    path = tmp_path / "v.gguf"
    write_control_vector(path, {"direction.0": np.ones(D, dtype=np.float32)})
    with pytest.raises(ArtifactError, match="direction.0"):
        import_gguf(path, "x")


def test_refuses_wrong_width(tmp_path):
    path = tmp_path / "v.gguf"
    write_control_vector(path, {"direction.1": np.ones(D, dtype=np.float32)})
    with pytest.raises(ArtifactError, match=f"width {D} but the model's hidden size is 16"):
        import_gguf(path, "x", hidden_size=16)


def test_refuses_mixed_widths(tmp_path):
    path = tmp_path / "v.gguf"
    write_control_vector(path, {"direction.1": np.ones(D, dtype=np.float32), "direction.2": np.ones(D + 1, dtype=np.float32)})
    with pytest.raises(ArtifactError, match="different widths"):
        import_gguf(path, "x")


def test_refuses_nan(tmp_path):
    path = tmp_path / "v.gguf"
    row = np.ones(D, dtype=np.float32)
    row[3] = np.nan
    write_control_vector(path, {"direction.1": row})
    with pytest.raises(ArtifactError, match="NaN"):
        import_gguf(path, "x")


def test_refuses_bad_name(tmp_path):
    path = tmp_path / "v.gguf"
    write_control_vector(path, {"direction.1": np.ones(D, dtype=np.float32)})
    with pytest.raises(ArtifactError, match="not allowed"):
        import_gguf(path, "../escape")


def test_refuses_other_models_fingerprint(tmp_path):
    out = tmp_path / "v.gguf"
    export_gguf(make_vector(), out)
    with pytest.raises(ArtifactError, match="fingerprint"):
        import_gguf(out, "x", fingerprint="e" * 64)
