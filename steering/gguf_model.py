"""Convert a llama-family GGUF file into an mlx-lm model directory.

mlx reads GGUF tensors itself (Q4_0/Q4_1/Q8_0 become mlx affine-quantized
weight/scales/biases with group size 32). What is left for us:
- map llama.cpp tensor names to Hugging Face/mlx-lm names;
- undo llama.cpp's row permutation of the Q and K projections (it interleaves
  the two rotary halves of every head). Only rows move: quantization groups run
  along the input dimension, so scales and biases move with their rows;
- write config.json (with per-layer quantization) and a tokenizer built from the
  GGUF vocabulary and merges, with the chat template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

SUPPORTED_TYPES = {"F32": None, "F16": None, "Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
GROUP_SIZE = 32  # mlx's reading of llama.cpp's block size for every supported type

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


class GGUFError(ValueError):
    pass


def hf_name(gguf_name: str) -> str:
    """'blk.3.attn_q.scales' -> 'model.layers.3.self_attn.q_proj.scales'."""
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        layer, module, leaf = parts[1], parts[2], parts[3]
        if module not in _LAYER_NAMES:
            raise GGUFError(f"unknown tensor {gguf_name}")
        return f"model.layers.{layer}.{_LAYER_NAMES[module]}.{leaf}"
    module, leaf = parts[0], parts[1]
    if module not in _TOP_NAMES:
        raise GGUFError(f"unknown tensor {gguf_name}")
    return f"{_TOP_NAMES[module]}.{leaf}"


def unpermute_rows(x, n_heads: int):
    """Inverse of llama.cpp's `permute` for Q/K rows.

    llama.cpp stores each head's rows as (half, 2) pairs where Hugging Face has
    (2, half) blocks; swapping the two axes back restores the HF order.
    """
    rows = x.shape[0]
    rest = x.shape[1:]
    half = rows // n_heads // 2
    return x.reshape(n_heads, half, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def tensor_types(path: Path) -> dict[str, str]:
    """GGUF tensor name -> ggml type name, read from the header only."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as exc:  # bad magic, truncated header, ...
        raise GGUFError(f"{path}: not a readable GGUF file ({exc})") from None
    return {t.name: t.tensor_type.name for t in reader.tensors}


def _scalar(meta: dict, key: str, default=None):
    if key not in meta:
        if default is None:
            raise GGUFError(f"metadata key {key} is missing")
        return default
    value = meta[key]
    try:
        return value.item()
    except AttributeError:
        return value


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write an mlx-lm model directory for a llama-family GGUF; returns out_dir."""
    import mlx.core as mx

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if not gguf_path.is_file():
        raise GGUFError(f"{gguf_path}: no such file")
    types = tensor_types(gguf_path)
    unsupported = sorted({t for t in types.values() if t not in SUPPORTED_TYPES})
    if unsupported:
        raise GGUFError(
            f"{gguf_path}: tensor type(s) {', '.join(unsupported)} not supported; "
            f"supported: {', '.join(SUPPORTED_TYPES)}"
        )
    weights, meta = mx.load(str(gguf_path), return_metadata=True)
    arch = _scalar(meta, "general.architecture")
    if arch != "llama":
        raise GGUFError(f"{gguf_path}: architecture {arch!r} is not supported (only llama-family GGUF files)")

    n_heads = int(_scalar(meta, "llama.attention.head_count"))
    n_kv = int(_scalar(meta, "llama.attention.head_count_kv", n_heads))
    hidden = int(_scalar(meta, "llama.embedding_length"))
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(meta, "llama.block_count")),
        "intermediate_size": int(_scalar(meta, "llama.feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "rms_norm_eps": float(_scalar(meta, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_scalar(meta, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(meta, "llama.context_length", 4096)),
        "vocab_size": int(_scalar(meta, "llama.vocab_size", len(meta.get("tokenizer.ggml.tokens", [])))),
        "tie_word_embeddings": "output.weight" not in weights,
        "head_dim": int(_scalar(meta, "llama.rope.dimension_count", hidden // n_heads)),
    }

    quantization: dict = {}
    out: dict = {}
    names = sorted(weights)
    for i, name in enumerate(names):
        array = weights[name]
        target = hf_name(name)
        if ".attn_q." in name:
            array = unpermute_rows(array, n_heads)
        elif ".attn_k." in name:
            array = unpermute_rows(array, n_kv)
        out[target] = array
        bits = SUPPORTED_TYPES.get(types.get(name.rsplit(".", 1)[0] + ".weight", "F32"))
        module = target.rsplit(".", 1)[0]
        if name.endswith(".weight") and bits:
            quantization[module] = {"group_size": GROUP_SIZE, "bits": bits}
        if progress:
            progress(i + 1, len(names))
    if quantization:
        bits_used = {q["bits"] for q in quantization.values()}
        config["quantization"] = {"group_size": GROUP_SIZE, "bits": max(bits_used), **quantization}

    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), out, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(meta, out_dir)
    return out_dir


def write_tokenizer(meta: dict, out_dir: Path) -> None:
    """tokenizer.json + tokenizer_config.json from GGUF's BPE vocabulary (tokenizer.ggml.model == 'gpt2')."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    kind = _scalar(meta, "tokenizer.ggml.model", "")
    if kind != "gpt2":
        raise GGUFError(f"tokenizer model {kind!r} is not supported (byte-level BPE, 'gpt2', is)")
    if "tokenizer.ggml.tokens" not in meta:
        raise GGUFError("the GGUF file has no vocabulary (tokenizer.ggml.tokens)")
    tokens = list(meta["tokenizer.ggml.tokens"])
    # mlx drops empty metadata arrays, so a vocabulary without merges has no key at all.
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    token_types = np.asarray(meta.get("tokenizer.ggml.token_type", np.ones(len(tokens))))
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _scalar(meta, "tokenizer.ggml.pre", "") == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    control = [tokens[i] for i in np.nonzero(token_types == 3)[0]]  # llama.cpp CONTROL tokens
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    tok.save(str(out_dir / "tokenizer.json"))

    def token_at(key: str):
        return tokens[int(_scalar(meta, key))] if key in meta else None

    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token_at("tokenizer.ggml.bos_token_id"),
        "eos_token": token_at("tokenizer.ggml.eos_token_id"),
        "unk_token": token_at("tokenizer.ggml.unknown_token_id"),
        "pad_token": token_at("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token", False)),
        "model_max_length": int(_scalar(meta, "llama.context_length", 4096)),
        "clean_up_tokenization_spaces": False,
    }
    if "tokenizer.chat_template" in meta:
        tok_config["chat_template"] = str(meta["tokenizer.chat_template"])
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (out_dir / "generation_config.json").write_text(
        json.dumps({"eos_token_id": int(_scalar(meta, "tokenizer.ggml.eos_token_id", 0))}, indent=2)
    )
