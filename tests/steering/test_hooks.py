"""Layer hooks: transparent, always removed, never nested, and invisible to the model code."""

import mlx.core as mx
import pytest

from mlx_interp.steering.capture import Recorder, ResidualHook
from mlx_interp.steering.hooks import HooksAlreadyInstalled, hooks_installed, layer_hooks
from mlx_interp.steering.layers import decoder_layers

TOKENS = [[3, 17, 99, 42, 7, 250, 64, 5]]


def _logits(lm, tokens=TOKENS):
    out = lm.model(mx.array(tokens))
    mx.eval(out)
    return out


def test_hooked_without_intervention_is_exactly_unhooked(tiny_lm):
    plain = _logits(tiny_lm)
    with layer_hooks(tiny_lm.model, ResidualHook(recorder=Recorder(last_only=False))):
        hooked = _logits(tiny_lm)
    assert mx.array_equal(plain, hooked).item()


def test_identity_hook_sees_every_layer_in_order(tiny_lm):
    seen = []

    def hook(index, h):
        seen.append((index, tuple(h.shape)))
        return h

    with layer_hooks(tiny_lm.model, hook):
        _logits(tiny_lm)
    assert [i for i, _ in seen] == list(range(tiny_lm.num_layers))
    assert all(shape == (1, len(TOKENS[0]), tiny_lm.hidden_size) for _, shape in seen)


def test_hook_output_replaces_the_layer_output(tiny_llama):
    plain = _logits(tiny_llama)
    last = tiny_llama.num_layers - 1
    with layer_hooks(tiny_llama.model, lambda i, h: h * 0 if i == last else h):
        zeroed = _logits(tiny_llama)
    # The final norm of a zero vector is zero, so every logit is zero.
    assert not mx.array_equal(plain, zeroed).item()
    assert mx.abs(zeroed).max().item() == 0.0


def test_hooks_removed_after_the_block(tiny_lm):
    layers = decoder_layers(tiny_lm.model)
    classes = [type(layer) for layer in layers]
    calls = []
    with layer_hooks(tiny_lm.model, lambda i, h: calls.append(i) or h):
        assert hooks_installed(tiny_lm.model)
        assert all(type(layer) is not cls for layer, cls in zip(layers, classes))
    assert not hooks_installed(tiny_lm.model)
    assert [type(layer) for layer in layers] == classes
    calls.clear()
    _logits(tiny_lm)
    assert calls == []  # the hook no longer runs


def test_hooks_removed_when_the_body_raises(tiny_llama):
    layers = decoder_layers(tiny_llama.model)
    classes = [type(layer) for layer in layers]
    with pytest.raises(KeyError, match="boom"):
        with layer_hooks(tiny_llama.model, lambda i, h: h):
            raise KeyError("boom")
    assert not hooks_installed(tiny_llama.model)
    assert [type(layer) for layer in layers] == classes
    assert all("_mlx_interp_hook" not in layer.__dict__ for layer in layers)


def test_an_install_that_fails_midway_leaves_no_layer_hooked(tiny_llama, monkeypatch):
    """A layer whose class cannot be swapped (e.g. an incompatible layout) must not leave the model marked hooked."""
    import mlx_interp.steering.hooks as hooks

    layers = decoder_layers(tiny_llama.model)
    classes = [type(layer) for layer in layers]
    real, calls = hooks._hooked_class, []

    def refuse_the_third(cls):
        calls.append(cls)
        if len(calls) == 3:
            raise TypeError("__class__ assignment: object layout differs")
        return real(cls)

    monkeypatch.setattr(hooks, "_hooked_class", refuse_the_third)
    with pytest.raises(TypeError, match="layout"):
        with layer_hooks(tiny_llama.model, lambda i, h: h):
            pass
    assert len(calls) == 3
    assert not hooks_installed(tiny_llama.model)
    assert [type(layer) for layer in layers] == classes
    monkeypatch.undo()
    with layer_hooks(tiny_llama.model, lambda i, h: h):  # installable again
        assert hooks_installed(tiny_llama.model)


def test_hooks_removed_when_the_hook_itself_raises(tiny_llama):
    def bad(index, h):
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"):
        with layer_hooks(tiny_llama.model, bad):
            _logits(tiny_llama)
    assert not hooks_installed(tiny_llama.model)
    with layer_hooks(tiny_llama.model, lambda i, h: h):  # and can be installed again
        pass


def test_nested_install_is_refused_and_outer_hooks_survive(tiny_llama):
    calls = []
    with layer_hooks(tiny_llama.model, lambda i, h: calls.append(i) or h):
        with pytest.raises(HooksAlreadyInstalled):
            with layer_hooks(tiny_llama.model, lambda i, h: h):
                pass
        assert hooks_installed(tiny_llama.model)
        _logits(tiny_llama)
    assert calls == list(range(tiny_llama.num_layers))
    assert not hooks_installed(tiny_llama.model)


def test_layers_keep_type_attributes_and_parameters(tiny_lm):
    layers = decoder_layers(tiny_lm.model)
    originals = [type(layer) for layer in layers]
    attrs_before = [{k: v for k, v in vars(layer).items()} for layer in layers]
    params_before = [set(layer.keys()) for layer in layers]
    with layer_hooks(tiny_lm.model, lambda i, h: h):
        for layer, cls, attrs, params in zip(layers, originals, attrs_before, params_before):
            assert isinstance(layer, cls)
            for key, value in attrs.items():
                assert getattr(layer, key) is value
            assert set(layer.keys()) == params  # no hook state leaked into the parameter tree
        # Module-level views that mlx-lm and mlx.nn use still work.
        names = [name for name, _ in tiny_lm.model.named_modules()]
        assert len(names) > tiny_lm.num_layers
        assert "_mlx_interp_hook" not in str(tiny_lm.model.parameters().keys())


def test_hooks_work_with_a_kv_cache(tiny_lm):
    """Prompt then one token through mlx-lm's cache, with and without hooks."""
    from mlx_lm.models.cache import make_prompt_cache

    def run():
        cache = make_prompt_cache(tiny_lm.model)
        tiny_lm.model(mx.array(TOKENS), cache=cache)
        out = tiny_lm.model(mx.array([[11]]), cache=cache)
        mx.eval(out)
        return out

    plain = run()
    with layer_hooks(tiny_lm.model, ResidualHook()):
        hooked = run()
    assert mx.array_equal(plain, hooked).item()
