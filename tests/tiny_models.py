"""Tiny randomly initialised mlx-lm models of several families, saved as real model directories.

They go through the same `load_model` path as real checkpoints, with a
byte-level tokenizer (256 byte tokens + chat specials) and a chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

HIDDEN = 64
LAYERS = 4
VOCAB = 320  # 256 bytes + a few specials, padded

_COMMON = {
    "hidden_size": HIDDEN,
    "num_hidden_layers": LAYERS,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": VOCAB,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
}

FAMILY_CONFIGS = {
    "llama": {"model_type": "llama", "tie_word_embeddings": True},
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": False},
    "gemma": {"model_type": "gemma", "head_dim": 16},
    "phi3": {"model_type": "phi3", "num_key_value_heads": 4},
}

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def write_tokenizer(out: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|im_end|>",
                "bos_token": None,
                "pad_token": "<|endoftext|>",
                "chat_template": CHAT_TEMPLATE,
                "clean_up_tokenization_spaces": False,
            }
        )
    )


def make_tiny_model_dir(family: str, out: Path, seed: int = 0, layers: int = LAYERS) -> Path:
    """Write config, random weights and tokenizer for `family` into out; returns out.

    `layers` deeper than the default serves tests of operations over layer ranges.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    out.mkdir(parents=True, exist_ok=True)
    config = {**_COMMON, **FAMILY_CONFIGS[family], "num_hidden_layers": layers}
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    # Default init leaves some norms at 1 and everything small; scale up so layers matter.
    params = dict(tree_flatten(model.parameters()))
    params = {k: (v * 4 if v.ndim == 2 else v) for k, v in params.items()}
    mx.save_safetensors(str(out / "model.safetensors"), params)
    (out / "config.json").write_text(json.dumps(config))
    write_tokenizer(out)
    return out
