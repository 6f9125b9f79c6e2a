"""Find the list of decoder blocks in any mlx-lm model without knowing its family."""

from __future__ import annotations

# Where mlx-lm families keep their blocks, most common first. The fallback
# search below covers families not listed.
_KNOWN_PATHS = (
    ("model", "layers"),
    ("language_model", "model", "layers"),
    ("model", "language_model", "layers"),
    ("transformer", "h"),
    ("backbone", "layers"),
    ("model", "decoder", "layers"),
    ("layers",),
)


def decoder_layers(model) -> list:
    """The model's list of transformer blocks (the residual stream is their output)."""
    layers = getattr(model, "layers", None)  # mlx-lm's Model.layers property, when the family defines one
    if isinstance(layers, list) and layers:
        return layers
    for path in _KNOWN_PATHS:
        obj = model
        for attr in path:
            obj = getattr(obj, attr, None) if not isinstance(obj, dict) else obj.get(attr)
            if obj is None:
                break
        if isinstance(obj, list) and obj:
            return obj
    # Fallback: the longest list of modules anywhere in the tree.
    best: list = []
    for _, child in model.named_modules():
        for value in child.values() if isinstance(child, dict) else ():
            if isinstance(value, list) and len(value) > len(best):
                best = value
    if not best:
        raise ValueError(f"cannot find the decoder layers of {type(model).__name__}")
    return best
