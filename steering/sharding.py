"""Split one model across the ranks of an mlx.distributed group: pipeline (layer ranges) or tensor (mlx-lm's shard).

Pipeline: each rank keeps a consecutive range of decoder blocks, in mlx-lm's
order (rank 0 holds the *last* blocks, rank size-1 the first), and the hidden
state goes from rank to rank with mx.distributed.send / recv_like. Rank 0 ends
with the final norm and the logits; the other ranks stop after their send.
mlx-lm 0.32's llama has no pipeline mixin, so the forward pass below is ours;
it covers the families whose inner model is `embed_tokens`, `layers`, `norm`
with a plain causal mask (llama, qwen2, mistral, ...). Layers keep their
global index for steering and probes: `first_layer` is the index of the
rank's first block.

Tensor: mlx-lm's `Model.shard(group)` splits every projection by heads and
all-reduces each block's output, so every rank sees complete layer outputs
and applies the same steering; the model must split evenly (heads, kv heads,
intermediate size divisible by the group size).

Both are applied to a lazily loaded model before its weights are evaluated,
so a rank only ever reads the weights it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

PIPELINE = "pipeline"
TENSOR = "tensor"
MODES = (PIPELINE, TENSOR)


@dataclass(frozen=True)
class ShardPlan:
    mode: str  # "pipeline" or "tensor"
    rank: int
    size: int
    first_layer: int = 0  # global index of this rank's first block (pipeline)
    end_layer: int = 0  # one past its last block
    num_layers: int = 0  # the whole model's

    def describe(self) -> dict:
        out = {"rank": self.rank, "mode": self.mode}
        if self.mode == PIPELINE:
            out["layers"] = [self.first_layer, self.end_layer]
        return out


def pipeline_split(num_layers: int, size: int, rank: int) -> tuple[int, int]:
    """[start, end) of rank's blocks: an even split, the low ranks take the extra blocks, rank 0 the last blocks."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} of {size}")
    if num_layers < size:
        raise ValueError(f"{num_layers} layers cannot be split over {size} ranks")
    base, extra = divmod(num_layers, size)
    counts = [base + (1 if r < extra else 0) for r in range(size)]
    start = sum(counts[rank + 1:])
    return start, start + counts[rank]


def default_mode(model, size: int) -> str:
    """Tensor where the model has mlx-lm's `shard` and splits evenly over `size`, else pipeline."""
    return TENSOR if tensor_split_problem(model, size) is None else PIPELINE


def tensor_split_problem(model, size: int) -> str | None:
    """Why `model` cannot be tensor-split over `size` ranks, or None."""
    if not hasattr(model, "shard"):
        return f"{type(model).__module__} has no shard()"
    args = getattr(model, "args", None)
    for name in ("num_attention_heads", "num_key_value_heads", "intermediate_size", "hidden_size"):
        value = getattr(args, name, None)
        if isinstance(value, int) and value % size:
            return f"{name} {value} is not divisible by {size} ranks"
    return None


def _inner(model):
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm")):
        raise ValueError(f"pipeline parallel needs a model with model.embed_tokens/layers/norm; {type(model).__module__} differs")
    return inner


def shard_model(model, mode: str, group) -> ShardPlan:
    """Shard `model` (lazily loaded, weights not yet evaluated) for this rank of `group`."""
    rank, size = group.rank(), group.size()
    if mode == TENSOR:
        problem = tensor_split_problem(model, size)
        if problem:
            raise ValueError(f"tensor parallel over {size} ranks: {problem}; use --parallel pipeline")
        n = len(_inner(model).layers) if hasattr(model, "model") else 0
        model.shard(group)
        return ShardPlan(TENSOR, rank, size, 0, n, n)
    if mode != PIPELINE:
        raise ValueError(f"--parallel must be one of {MODES}, got {mode!r}")
    inner = _inner(model)
    n = len(inner.layers)
    start, end = pipeline_split(n, size, rank)
    inner.layers = inner.layers[start:end]
    inner.__class__ = _pipeline_class(type(inner))
    inner._mlx_interp_pipe = (group, rank, size)
    if rank != 0:  # only rank 0 makes logits: the others end at their send
        model.__class__ = _stage_class(type(model))
    return ShardPlan(PIPELINE, rank, size, start, end, n)


_pipeline_classes: dict[type, type] = {}
_stage_classes: dict[type, type] = {}


def _pipeline_class(cls: type) -> type:
    if cls not in _pipeline_classes:
        _pipeline_classes[cls] = type(f"Pipeline{cls.__name__}", (cls,), {"__call__": _pipeline_call})
    return _pipeline_classes[cls]


def _stage_class(cls: type) -> type:
    if cls not in _stage_classes:
        def __call__(self, inputs, cache=None, input_embeddings=None):
            return self.model(inputs, cache, input_embeddings)  # the hidden state after the send; no logits

        _stage_classes[cls] = type(f"Stage{cls.__name__}", (cls,), {"__call__": __call__})
    return _stage_classes[cls]


def _pipeline_call(self, inputs, cache=None, input_embeddings=None):
    """One pipeline stage: receive from the rank before (rank+1), run the blocks kept here, send on (rank-1)."""
    import mlx.core as mx
    from mlx_lm.models.base import create_attention_mask

    group, rank, size = self._mlx_interp_pipe
    if rank == size - 1:  # the first stage embeds the tokens
        h = input_embeddings if input_embeddings is not None else self.embed_tokens(inputs)
    else:
        shape = (inputs.shape[0], inputs.shape[1], self.args.hidden_size)
        h = mx.distributed.recv_like(mx.zeros(shape, dtype=self.norm.weight.dtype), rank + 1, group=group)
    if cache is None:
        cache = [None] * len(self.layers)
    window = getattr(self, "sliding_window", None)
    full = sliding = None
    for layer, c in zip(self.layers, cache):
        if getattr(layer, "use_sliding", False):
            if sliding is None:
                sliding = create_attention_mask(h, c, window_size=window)
            mask = sliding
        else:
            if full is None:
                full = create_attention_mask(h, c)
            mask = full
        h = layer(h, mask, cache=c)
    if rank != 0:
        return mx.distributed.send(h, rank - 1, group=group)
    return self.norm(h)
