"""The default --max-batch: as many rows as the machine holds at the longest context, capped per backend.

A row's memory is its KV cache at the longest context a request may reach
(--max-prompt-tokens + --max-tokens, or the model's own limit if smaller), plus
the step's activations for it (logits, every layer's captured state, the
attention scores of one layer). The budget is the memory left after the weights:
on a GPU the device's memory (90% of it), on the CPU half of what the system
reports available (the rest is left to the OS, the page cache and other
processes).

The caps: a CPU decodes a batch at about the speed of its memory bandwidth over
the weights plus every row's matmul work, and on a few cores the step time grows
almost linearly past a handful of rows, so CPU_CAP keeps first tokens prompt; a
GPU keeps gaining throughput well past 16 rows (32 clients on an H200 were 15%
faster at --max-batch 32 than at 16), so GPU_CAP is larger.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CPU_CAP = 8
GPU_CAP = 64
GPU_FRACTION = 0.9
CPU_FRACTION = 0.5


@dataclass(frozen=True)
class BatchFit:
    max_batch: int
    per_row_bytes: int
    budget_bytes: int
    context: int
    device: str

    def describe(self) -> str:
        gib = 1024**3
        return (f"--max-batch {self.max_batch} ({self.device}: {self.budget_bytes / gib:.1f} GiB for rows, "
                f"{self.per_row_bytes / gib:.2f} GiB per row at {self.context} tokens)")


def per_row_bytes(lm, context: int) -> int:
    """KV cache of one row at `context` tokens, plus its share of one decode step's activations."""
    cfg = lm.config
    args = getattr(lm.model, "args", None)

    def get(name, default=None):
        value = getattr(args, name, None) if args is not None else None
        return value if value is not None else cfg.get(name, default)

    layers = lm.num_layers
    heads = get("num_attention_heads", 1) or 1
    kv_heads = get("num_key_value_heads", heads) or heads
    head_dim = get("head_dim") or lm.hidden_size // heads
    itemsize = _activation_itemsize(lm)
    kv = 2 * layers * kv_heads * head_dim * itemsize * context
    vocab = get("vocab_size", 0) or 0
    activations = 4 * vocab * 4 + layers * lm.hidden_size * 4 + heads * context * 4 + 8 * lm.hidden_size * 4
    return int(kv + activations)


def _activation_itemsize(lm) -> int:
    import mlx.core as mx

    dtypes = {"float32": 4, "float16": 2, "bfloat16": 2}
    if lm.dtype in dtypes:
        return dtypes[lm.dtype]
    # native: quantized or half weights compute (and cache) in the model's floating dtype
    from mlx.utils import tree_flatten

    for item in tree_flatten(lm.model.parameters()):
        p = item[1]
        if mx.issubdtype(p.dtype, mx.floating) and p.dtype != mx.float32:
            return p.dtype.size
    return 4


def memory_budget() -> tuple[int, str]:
    """(bytes the batch's rows may use, 'cpu' or 'gpu')."""
    import mlx.core as mx

    from mlx_interp.steering.backend import default_device_kind

    kind = default_device_kind()
    if kind == "gpu":
        info = mx.device_info()
        total = info.get("memory_size") or info.get("total_memory") or 0
        if total:
            return max(0, int(total * GPU_FRACTION) - mx.get_active_memory()), kind
    return int(_available_system_memory() * CPU_FRACTION), kind


def _available_system_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def fit_max_batch(lm, limits) -> BatchFit:
    """The default max_batch for this model on this machine under these limits."""
    context = limits.max_prompt_tokens + limits.max_tokens
    model_max = lm.config.get("max_position_embeddings")
    if isinstance(model_max, int) and model_max > 0:
        context = min(context, model_max)
    row = per_row_bytes(lm, context)
    budget, kind = memory_budget()
    cap = GPU_CAP if kind == "gpu" else CPU_CAP
    return BatchFit(max(1, min(cap, budget // max(1, row))), row, budget, context, kind)
