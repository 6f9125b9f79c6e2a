"""GGUF -> mlx-lm conversion on tiny llama GGUF files written here the way llama.cpp lays them out."""

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf.quants import dequantize, quantize
from gguf_writer import llama_cpp_permute, write_llama_gguf

from mlx_interp.steering.gguf_model import GGUFError, convert_gguf, unpermute_rows
from mlx_interp.steering.model import load_model

TOKENS = [[3, 17, 99, 42, 7, 250, 64, 5]]
QUANTIZED = ("Q8_0", "Q4_0", "Q4_1")


def _logits(lm):
    out = lm.model(mx.array(TOKENS)).astype(mx.float32)
    return np.array(out)


@pytest.fixture(scope="module")
def llama_dir(tiny_model_dirs):
    return tiny_model_dirs["llama"]


@pytest.fixture(scope="module")
def reference(tiny_llama):
    return _logits(tiny_llama)


@pytest.fixture(scope="module")
def gguf_files(llama_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {q: write_llama_gguf(llama_dir, root / f"tiny-{q}.gguf", q) for q in ("F32", "F16", *QUANTIZED)}


@pytest.fixture(scope="module")
def converted(gguf_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("converted")
    return {q: convert_gguf(path, root / q) for q, path in gguf_files.items()}


def _scale(x):
    return max(1.0, float(np.abs(x).max()))


def test_unpermute_inverts_llama_cpp_permute():
    x = np.arange(8 * 2 * 6 * 5, dtype=np.float32).reshape(8 * 2 * 6, 5)
    for heads in (1, 2, 8):
        permuted = llama_cpp_permute(x, heads)
        assert not np.array_equal(permuted, x)
        np.testing.assert_array_equal(np.array(unpermute_rows(mx.array(permuted), heads)), x)


def test_f32_gguf_reproduces_the_model_exactly(converted, reference):
    lm = load_model(str(converted["F32"]), dtype="float32", progress=False)
    np.testing.assert_allclose(_logits(lm), reference, rtol=0, atol=1e-5 * _scale(reference))


def test_without_unpermuting_the_logits_would_be_wrong(llama_dir, tmp_path, reference):
    """Control: a file whose Q/K rows were never permuted converts to a different model,
    so the match above proves the converter undoes llama.cpp's permutation."""
    path = write_llama_gguf(llama_dir, tmp_path / "unpermuted.gguf", "F32", permute=False)
    lm = load_model(str(convert_gguf(path, tmp_path / "out")), dtype="float32", progress=False)
    assert np.abs(_logits(lm) - reference).max() > 0.05 * _scale(reference)


def test_f16_gguf_matches_within_half_precision(converted, reference):
    lm = load_model(str(converted["F16"]), dtype="float32", progress=False)
    np.testing.assert_allclose(_logits(lm), reference, rtol=0, atol=1e-2 * _scale(reference))


def _dequantized_reference(llama_dir, tmp_path, qtype_name):
    """The original model with every matrix round-tripped through gguf's own numpy (de)quantizer."""
    import shutil

    qtype = gguf.GGMLQuantizationType[qtype_name]
    weights = mx.load(str(llama_dir / "model.safetensors"))
    rounded = {
        k: mx.array(dequantize(quantize(np.array(v), qtype), qtype)) if v.ndim == 2 else v for k, v in weights.items()
    }
    out = tmp_path / f"ref-{qtype_name}"
    shutil.copytree(llama_dir, out)
    mx.save_safetensors(str(out / "model.safetensors"), rounded)
    return _logits(load_model(str(out), dtype="float32", progress=False))


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_quantized_gguf_matches_the_reference_dequantization(qtype, converted, llama_dir, tmp_path, reference):
    expected = _dequantized_reference(llama_dir, tmp_path, qtype)
    lm = load_model(str(converted[qtype]), dtype="float32", progress=False)
    got = _logits(lm)
    # Same weights as gguf's reference dequantizer, so the same logits up to float32 rounding:
    # block layout, scales, minimums and the Q/K row order are all right.
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * _scale(expected))
    # And still the original model, within what the quantization costs on a random model.
    corr = np.corrcoef(got.ravel(), reference.ravel())[0, 1]
    assert corr > (0.99 if qtype == "Q8_0" else 0.6), corr


@pytest.mark.parametrize("qtype", QUANTIZED)
def test_native_load_keeps_quantized_layers(qtype, converted):
    import mlx.nn as nn

    from mlx_interp.steering.fused_projections import fused_source

    native = load_model(str(converted[qtype]), dtype="native", progress=False)
    dense = load_model(str(converted[qtype]), dtype="float32", progress=False)
    q_proj = fused_source(native.model.model.layers[0].self_attn.q_proj)  # q/k/v fused at load, still quantized
    assert isinstance(q_proj, nn.QuantizedLinear)
    assert q_proj.bits == (8 if qtype == "Q8_0" else 4) and q_proj.group_size == 32
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in dense.model.named_modules())
    a, b = _logits(native), _logits(dense)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-2 * _scale(b))
    assert native.fingerprint == dense.fingerprint


def test_tokenizer_and_config_survive_conversion(converted, tiny_llama):
    import json

    lm = load_model(str(converted["Q4_0"]), progress=False)
    for text in ("hello world", "Ünïcode ✓ 123"):
        assert lm.tokenizer.encode(text) == tiny_llama.tokenizer.encode(text)
        assert lm.tokenizer.decode(lm.tokenizer.encode(text)) == text
    chat = lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat.endswith("<|im_start|>assistant\n")
    assert tiny_llama.tokenizer.encode("<|im_end|>")[0] in lm.tokenizer.eos_token_ids
    config = json.loads((converted["Q4_0"] / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == tiny_llama.num_layers
    assert config["tie_word_embeddings"] is True
    assert config["quantization"]["model.layers.0.self_attn.q_proj"] == {"group_size": 32, "bits": 4}
    assert lm.num_layers == tiny_llama.num_layers and lm.hidden_size == tiny_llama.hidden_size


def test_load_model_converts_a_gguf_path_once_into_the_cache(gguf_files, tmp_path, monkeypatch, reference):
    import mlx_interp.steering.gguf_model as gguf_model

    monkeypatch.setenv("MLX_INTERP_CACHE", str(tmp_path / "cache"))
    lm = load_model(str(gguf_files["F32"]), progress=False)
    assert lm.model_id == "tiny-F32"
    assert str(tmp_path / "cache") in lm.path
    np.testing.assert_allclose(_logits(lm), reference, rtol=0, atol=1e-5 * _scale(reference))

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_model, "convert_gguf", no_second_conversion)
    assert load_model(str(gguf_files["F32"]), progress=False).path == lm.path


def test_unsupported_tensor_type_names_the_type(llama_dir, tmp_path):
    path = write_llama_gguf(llama_dir, tmp_path / "q5.gguf", "Q5_0")
    with pytest.raises(GGUFError, match=r"tensor type\(s\) Q5_0 not supported.*Q4_0"):
        convert_gguf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_architectures_are_refused(llama_dir, tmp_path):
    path = write_llama_gguf(llama_dir, tmp_path / "qwen.gguf", "F32", arch="qwen2")
    with pytest.raises(GGUFError, match="architecture 'qwen2' is not supported"):
        convert_gguf(path, tmp_path / "out")


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(GGUFError, match="no such file"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        load_model(str(tmp_path / "absent.gguf"), progress=False)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(GGUFError, match="not a readable GGUF file"):
        convert_gguf(junk, tmp_path / "out")
