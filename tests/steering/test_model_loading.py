"""load_model: model specs, dtype choice, fingerprints, and the fast default backend."""

import json
import platform

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_interp.steering.backend import OPENBLAS_CANDIDATES, blas_choice, resolve_dtype
from mlx_interp.steering.fused_projections import fused_source
from mlx_interp.steering.model import load_model, resolve_model_path

TOKENS = [[3, 17, 99, 42, 7, 250, 64, 5]]


@pytest.fixture(scope="module")
def quantized_dir(tiny_model_dirs, tmp_path_factory):
    """The tiny llama quantized to 4 bits the way mlx-lm's converter does (an mlx-community-style checkpoint)."""
    import shutil

    from mlx.utils import tree_flatten
    from mlx_lm.utils import load, quantize_model

    out = tmp_path_factory.mktemp("q4")
    shutil.copytree(tiny_model_dirs["llama"], out, dirs_exist_ok=True)
    model, _ = load(str(tiny_model_dirs["llama"]))
    config = json.loads((out / "config.json").read_text())
    model, config = quantize_model(model, config, group_size=32, bits=4)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(config))
    return out


def _quantized_modules(model):
    return [m for _, m in model.named_modules() if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))]


def _float_dtypes(model):
    from mlx.utils import tree_flatten

    return {v.dtype for _, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)}


def test_float32_dequantizes_a_quantized_model(quantized_dir):
    lm = load_model(str(quantized_dir), dtype="float32", progress=False)
    assert lm.dtype == "float32"
    assert _quantized_modules(lm.model) == []
    assert _float_dtypes(lm.model) == {mx.float32}


def test_native_keeps_the_quantized_layers(quantized_dir):
    lm = load_model(str(quantized_dir), dtype="native", progress=False)
    assert lm.dtype == "native"
    assert len(_quantized_modules(lm.model)) > 0
    # gate/up are fused at load (steering/fused_projections.py); the fused product is still quantized
    assert isinstance(fused_source(lm.model.model.layers[0].mlp.up_proj), nn.QuantizedLinear)


def test_float32_and_native_compute_the_same_model(quantized_dir):
    dense = load_model(str(quantized_dir), dtype="float32", progress=False)
    native = load_model(str(quantized_dir), dtype="native", progress=False)
    a = np.array(dense.model(mx.array(TOKENS)))
    b = np.array(native.model(mx.array(TOKENS)).astype(mx.float32))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-2 * max(1.0, np.abs(a).max()))


def test_half_precision_loads(tiny_model_dirs):
    lm = load_model(str(tiny_model_dirs["qwen2"]), dtype="float16", progress=False)
    assert _float_dtypes(lm.model) == {mx.float16}
    assert lm.model(mx.array(TOKENS)).dtype == mx.float16


def test_fingerprint_ignores_dtype_but_not_the_architecture(quantized_dir, tiny_model_dirs):
    f32 = load_model(str(quantized_dir), dtype="float32", progress=False)
    native = load_model(str(quantized_dir), dtype="native", progress=False)
    plain = load_model(str(tiny_model_dirs["llama"]), dtype="float32", progress=False)
    other = load_model(str(tiny_model_dirs["qwen2"]), dtype="float32", progress=False)
    assert f32.fingerprint == native.fingerprint == plain.fingerprint
    assert len(f32.fingerprint) == 64
    assert other.fingerprint != f32.fingerprint


def test_loaded_model_facts(tiny_lm):
    from tiny_models import HIDDEN, LAYERS

    assert tiny_lm.num_layers == LAYERS == len(tiny_lm.layers)
    assert tiny_lm.hidden_size == HIDDEN
    assert tiny_lm.config["model_type"] in ("llama", "qwen2", "gemma", "phi3")
    assert tiny_lm.model_id == tiny_lm.config["model_type"]  # the directory's name


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("/no/such/model/dir", FileNotFoundError, "model not found: /no/such/model/dir"),
        ("./missing-model", FileNotFoundError, "model not found"),
        ("/no/such/file.gguf", FileNotFoundError, "GGUF file not found"),
    ],
)
def test_bad_specs_give_clear_errors(spec, error, message):
    with pytest.raises(error, match=message):
        load_model(spec, progress=False)


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not an mlx-lm model directory \\(no config.json\\)"):
        resolve_model_path(str(tmp_path))


def test_a_file_that_is_not_a_model(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0")
    with pytest.raises(ValueError, match="neither a model directory nor a .gguf file"):
        resolve_model_path(str(f))


def test_dtype_choice(monkeypatch):
    monkeypatch.delenv("MLX_INTERP_DTYPE", raising=False)
    expected = "native" if mx.default_device() == mx.gpu else "float32"
    assert resolve_dtype() == resolve_dtype("auto") == expected
    assert resolve_dtype("NATIVE") == "native"
    monkeypatch.setenv("MLX_INTERP_DTYPE", "bfloat16")
    assert resolve_dtype() == "bfloat16"
    assert resolve_dtype("float32") == "float32"  # an explicit argument wins
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("int8")


@pytest.mark.skipif(platform.system() != "Linux", reason="OpenBLAS is loaded on Linux only")
def test_linux_cpu_default_is_float32_with_openblas(monkeypatch):
    """The issue's requirement: the default configuration is the fast one."""
    import os

    monkeypatch.delenv("MLX_INTERP_DTYPE", raising=False)
    if os.environ.get("MLX_INTERP_BLAS", "auto") != "auto" or not any(os.path.exists(p) for p in OPENBLAS_CANDIDATES):
        pytest.skip("OpenBLAS not installed or overridden in this environment")
    choice = blas_choice()
    assert choice.path in OPENBLAS_CANDIDATES, choice.reason
    assert resolve_dtype() == "float32"
