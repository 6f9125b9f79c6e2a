"""Write a tiny llama-family model as a GGUF file the way llama.cpp's converter lays it out.

Used by the GGUF loading tests: tensor names in llama.cpp's scheme, Q and K
rows permuted (llama.cpp interleaves the two rotary halves of each head), the
weights quantized with `gguf.quants`, and a byte-level BPE vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_LAYER_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF order (per head: first rotary half, then second) -> llama.cpp's interleaved pairs."""
    rows = w.shape[0]
    half = rows // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensor_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf.split(".", 3)
    module, leaf = rest.rsplit(".", 1)
    return f"blk.{layer}.{_LAYER_MODULES[module]}.{leaf}"


def write_llama_gguf(model_dir: Path, out: Path, qtype_name: str = "F32", arch: str = "llama", permute: bool = True) -> Path:
    """GGUF of the mlx-lm llama directory `model_dir`; 2-D weights stored as `qtype_name`, norms as F32."""
    import gguf
    import mlx.core as mx
    from gguf.quants import quantize

    config = json.loads((model_dir / "config.json").read_text())
    weights = {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(model_dir / "model.safetensors")).items()}
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    qtype = gguf.GGMLQuantizationType[qtype_name]
    n_heads = config["num_attention_heads"]
    n_kv = config["num_key_value_heads"]

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_rope_dimension_count(config["hidden_size"] // n_heads)
    writer.add_vocab_size(config["vocab_size"])

    # Vocabulary in id order, padded to vocab_size like real checkpoints do.
    vocab = tokenizer["model"]["vocab"]
    for added in tokenizer.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [None] * config["vocab_size"]
    for text, idx in vocab.items():
        tokens[idx] = text
    specials = {a["content"] for a in tokenizer.get("added_tokens", [])}
    types = []
    for i, t in enumerate(tokens):
        if t is None:
            tokens[i] = f"<unused{i}>"
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([])  # the byte-level tiny vocabulary has no merges
    writer.add_eos_token_id(vocab[tok_config["eos_token"]])
    writer.add_bos_token_id(vocab[tok_config["pad_token"]])
    writer.add_chat_template(tok_config["chat_template"])

    for hf, w in sorted(weights.items()):
        name = gguf_tensor_name(hf)
        if permute and ".attn_q." in name:
            w = llama_cpp_permute(w, n_heads)
        elif permute and ".attn_k." in name:
            w = llama_cpp_permute(w, n_kv)
        if w.ndim == 2 and qtype_name != "F32":
            writer.add_tensor(name, quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, w.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
