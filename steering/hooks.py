"""Residual-stream hooks on any mlx-lm model, installed and removed by a context manager.

A hook sees each decoder layer's output (the residual stream after that block)
and may return a replacement. A hook object with `wants_block_input = True` is
also given the block's input, `hook(index, output, block_input)`: an operation
that acts once over a range of layers changes the block's own write
(output - input) after the range's first layer, and needs both. mlx-lm's model code reads attributes off its
layer objects (`layer.use_sliding`, `layer.is_linear`, ...), so instead of
wrapping a layer in another object we swap the layer's *class* for a subclass
whose `__call__` runs the hook. The object, its attributes and its parameters
stay exactly what the model code expects; removing the hook swaps the class back.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from .layers import decoder_layers

_HOOK_ATTR = "_mlx_interp_hook"
_hooked_classes: dict[type, type] = {}  # original class -> hooked subclass (immutable cache of types)


class LayerHook(Protocol):
    def __call__(self, layer_index: int, hidden):  # -> hidden (mx.array)
        ...


class HooksAlreadyInstalled(RuntimeError):
    pass


def _hooked_class(cls: type) -> type:
    if cls not in _hooked_classes:

        def __call__(self, *args, **kwargs):
            out = cls.__call__(self, *args, **kwargs)
            hook, index, wants_input = self.__dict__[_HOOK_ATTR]
            hidden = out[0] if isinstance(out, tuple) else out  # a few families return (hidden, extra)
            if wants_input:
                # Every mlx-lm family calls a decoder layer with the hidden state first.
                hidden = hook(index, hidden, args[0] if args else kwargs.get("x"))
            else:
                hidden = hook(index, hidden)
            return (hidden,) + out[1:] if isinstance(out, tuple) else hidden

        _hooked_classes[cls] = type(f"Hooked{cls.__name__}", (cls,), {"__call__": __call__})
    return _hooked_classes[cls]


def hooks_installed(model) -> bool:
    return any(_HOOK_ATTR in layer.__dict__ for layer in decoder_layers(model))


@contextmanager
def layer_hooks(model, hook: Callable[[int, object], object], first_index: int = 0) -> Iterator[None]:
    """Run `hook(layer_index, hidden) -> hidden` on every decoder layer's output inside the block.

    `first_index` is the global index of the model's first block: a pipeline rank holds only
    some blocks of the model (steering.sharding) and still names them by their global index.

    With `hook.wants_block_input` true the call is `hook(layer_index, hidden, block_input)`.

    The hooks are removed when the block exits, normally or by an exception.
    One hook set per model at a time: nesting raises instead of silently
    composing two owners' interventions.
    """
    layers = decoder_layers(model)
    wants_input = bool(getattr(hook, "wants_block_input", False))
    if hooks_installed(model):
        raise HooksAlreadyInstalled("this model already has mlx-interp hooks installed")
    installed = []
    try:
        for index, layer in enumerate(layers):
            # Recorded before anything changes, so a layer whose class swap raises is still cleaned up.
            installed.append((layer, type(layer)))
            object.__setattr__(layer, _HOOK_ATTR, (hook, first_index + index, wants_input))
            layer.__class__ = _hooked_class(type(layer))
        yield
    finally:
        for layer, original in installed:
            layer.__class__ = original
            layer.__dict__.pop(_HOOK_ATTR, None)
