"""Load a model for steering: the embedded default, an mlx-lm directory, a hub repo id, or a GGUF file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import resolve_dtype
from .layers import decoder_layers


@dataclass
class LoadedModel:
    """A model plus the facts artifacts are checked against.

    `fingerprint` identifies the architecture and vocabulary, not the bytes of
    the weights, so an artifact built on the float32 CPU load of a model is
    accepted by the 4-bit Metal load of the same model.
    """

    model: Any  # mlx.nn.Module
    tokenizer: Any  # mlx_lm TokenizerWrapper
    model_id: str
    path: str
    fingerprint: str
    hidden_size: int
    num_layers: int
    dtype: str
    config: dict = field(repr=False, default_factory=dict)
    first_layer: int = 0  # global index of the first block held here (a pipeline rank holds a range)
    shard: Any = None  # steering.sharding.ShardPlan when the model is split across ranks

    @property
    def layers(self) -> list:
        return decoder_layers(self.model)


def resolve_model_path(spec: str, progress: bool = True) -> tuple[str, Path]:
    """(model id, local mlx-lm directory) for a --model argument."""
    from .default_model import DEFAULT_MODEL_ALIAS, DEFAULT_MODEL_ID, cache_dir, ensure_default_model

    if spec in (DEFAULT_MODEL_ALIAS, DEFAULT_MODEL_ID):
        return DEFAULT_MODEL_ID, ensure_default_model(progress=progress)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        from .gguf_model import convert_gguf

        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:16]
        target = cache_dir() / "models" / f"gguf-{path.stem}-{digest}"
        if not (target / "config.json").exists():
            convert_gguf(path, target)
        return path.stem, target
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not an mlx-lm model directory (no config.json)")
        return path.name, path
    if path.exists():
        raise ValueError(f"{path} is neither a model directory nor a .gguf file")
    if _looks_like_path(spec):
        raise FileNotFoundError(f"model not found: {spec} (no such file or directory)")
    return spec, _hub_model_path(spec)


def _looks_like_path(spec: str) -> bool:
    """A spec that can only mean a local path; 'owner/name' (or 'name') may be a hub repo id."""
    return spec.startswith(("/", ".", "~", "\\")) or spec.count("/") > 1 or ":" in spec


def _hub_model_path(repo_id: str) -> Path:
    """A Hugging Face repo id, as mlx-lm loads it: the local hub cache first, else a download."""
    from mlx_lm.utils import _download, hf_repo_to_path

    try:
        return Path(hf_repo_to_path(repo_id))
    except Exception:  # not in the local cache (or not a valid id): let the hub answer
        pass
    try:
        return Path(_download(repo_id))
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(
            f"model {repo_id!r} is not a local path and could not be fetched from the Hugging Face hub: {reason}"
        ) from None


def load_model(spec: str = "default", dtype: str | None = None, progress: bool = True, shard=None) -> LoadedModel:
    """Load `spec` in the compute dtype chosen for this backend (see backend.resolve_dtype).

    `shard(model) -> ShardPlan` (steering.sharding) splits the lazily loaded model for one rank
    before any weight is read, so a rank reads only the weights it keeps.
    """
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model, load

    from .fused_projections import fuse_enabled, fuse_projections
    from .quantized_rows import flat_enabled, flatten_quantized_rows

    model_id, path = resolve_model_path(spec, progress=progress)
    model, tokenizer = load(str(path), lazy=True)
    num_layers_whole = len(decoder_layers(model))
    config = json.loads((path / "config.json").read_text())
    chosen = resolve_dtype(dtype)
    if chosen != "native":
        target = getattr(mx, chosen)
        if "quantization" in config or "quantization_config" in config:
            _upcast_quantization_params(model, target)
            model = dequantize_model(model)
        model.set_dtype(target, predicate=lambda d: mx.issubdtype(d, mx.floating))
    plan = shard(model) if shard is not None else None  # after dequantizing: mlx-lm shards plain Linear layers too
    if plan is None and fuse_enabled():
        fuse_projections(model)  # q/k/v and gate/up as one product each (steering/fused_projections.py); not on ranks
    if flat_enabled():
        flatten_quantized_rows(model)  # a batch's rows as one quantized matmul on CUDA (steering/quantized_rows.py)
    mx.eval(model.parameters())
    hidden = _hidden_size(model, config)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        path=str(path),
        fingerprint=model_fingerprint(config, tokenizer, num_layers_whole, hidden),
        hidden_size=hidden,
        num_layers=num_layers_whole,
        dtype=chosen,
        config=config,
        first_layer=plan.first_layer if plan is not None and plan.mode == "pipeline" else 0,
        shard=plan,
    )


def _upcast_quantization_params(model, dtype) -> None:
    """Give quantized layers' scales and biases the compute dtype before dequantizing.

    GGUF (and most mlx checkpoints) store them as float16, and mx.dequantize
    computes in their dtype: dequantizing to float32 through float16 would round
    every weight to 11 significant bits on the way.
    """
    for _, module in model.named_modules():
        for key in ("scales", "biases"):
            value = module.get(key) if isinstance(module, dict) else None
            if value is not None and value.dtype != dtype:
                module[key] = value.astype(dtype)


def _hidden_size(model, config: dict) -> int:
    text_config = config.get("text_config", config)
    for key in ("hidden_size", "d_model", "n_embd", "dim"):
        if key in text_config:
            return int(text_config[key])
    args = getattr(model, "args", None)
    if args is not None and hasattr(args, "hidden_size"):
        return int(args.hidden_size)
    raise ValueError("cannot tell the model's hidden size from its config")


def model_fingerprint(config: dict, tokenizer, num_layers: int, hidden_size: int) -> str:
    """sha256 over the architecture and the vocabulary (dtype and quantization excluded)."""
    text_config = config.get("text_config", config)
    arch = {
        "model_type": text_config.get("model_type", config.get("model_type")),
        "num_layers": num_layers,
        "hidden_size": hidden_size,
        "intermediate_size": text_config.get("intermediate_size"),
        "num_attention_heads": text_config.get("num_attention_heads"),
        "num_key_value_heads": text_config.get("num_key_value_heads"),
    }
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    vocab_digest = hashlib.sha256(
        "\n".join(f"{tok}\t{idx}" for tok, idx in sorted(vocab.items(), key=lambda kv: kv[1])).encode()
    ).hexdigest()
    payload = json.dumps({"arch": arch, "vocab": vocab_digest}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
