"""capture_hidden_states, encode and the Recorder: shapes, positions, batching, steering."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.steering.capture import Recorder, ResidualHook, capture_hidden_states, encode
from mlx_interp.steering.hooks import hooks_installed, layer_hooks
from mlx_interp.steering.interventions import Intervention, Op, Scope

TEXTS = ["abcd", "wxyz", "hello world", "1234", "a much longer sentence here"]  # three share a length


def _reference_all(lm, tokens):
    """(L, T, D) of one text, by a plain hook that keeps every layer's output."""
    outs = {}

    def hook(i, h):
        outs[i] = np.array(h[0])
        return h

    with layer_hooks(lm.model, hook):
        mx.eval(lm.model(mx.array([tokens])))
    return np.stack([outs[i] for i in range(lm.num_layers)])


def test_shapes_for_each_position(tiny_lm):
    L, D = tiny_lm.num_layers, tiny_lm.hidden_size
    last = capture_hidden_states(tiny_lm, TEXTS, position="last")
    mean = capture_hidden_states(tiny_lm, TEXTS, position="mean")
    every = capture_hidden_states(tiny_lm, TEXTS, position="all")
    assert last.shape == mean.shape == (len(TEXTS), L, D)
    assert last.dtype == np.float32 and mean.dtype == np.float32
    assert isinstance(every, list) and len(every) == len(TEXTS)
    for text, arr in zip(TEXTS, every):
        assert arr.shape == (L, len(encode(tiny_lm, text)), D)
        assert arr.dtype == np.float32


def test_positions_agree_with_each_other_and_a_plain_hook(tiny_lm):
    last = capture_hidden_states(tiny_lm, TEXTS, position="last")
    mean = capture_hidden_states(tiny_lm, TEXTS, position="mean")
    every = capture_hidden_states(tiny_lm, TEXTS, position="all")
    for i, text in enumerate(TEXTS):
        ref = _reference_all(tiny_lm, encode(tiny_lm, text))
        # Texts of equal length ran as one batch here: equal up to BLAS rounding.
        tol = 1e-5 * max(1.0, np.abs(ref).max())
        np.testing.assert_allclose(every[i], ref, rtol=0, atol=tol)
        np.testing.assert_array_equal(last[i], every[i][:, -1, :])
        np.testing.assert_allclose(mean[i], every[i].mean(axis=1), rtol=0, atol=tol)


def test_equal_length_batching_gives_the_one_by_one_result(tiny_lm):
    together = capture_hidden_states(tiny_lm, TEXTS)
    for i, text in enumerate(TEXTS):
        alone = capture_hidden_states(tiny_lm, [text])
        np.testing.assert_allclose(together[i], alone[0], rtol=0, atol=1e-5 * max(1.0, np.abs(alone).max()))


def test_layer_subset_in_sorted_order(tiny_lm):
    full = capture_hidden_states(tiny_lm, TEXTS[:2])
    chosen = [tiny_lm.num_layers - 1, 0]
    part = capture_hidden_states(tiny_lm, TEXTS[:2], layers=chosen)
    assert part.shape == (2, 2, tiny_lm.hidden_size)
    np.testing.assert_array_equal(part, full[:, sorted(chosen), :])


def test_capture_sees_the_steered_stream(tiny_llama):
    rng = np.random.default_rng(3)
    d = rng.standard_normal((tiny_llama.num_layers, tiny_llama.hidden_size)).astype(np.float32)
    plain = capture_hidden_states(tiny_llama, TEXTS[:2])
    steered = capture_hidden_states(tiny_llama, TEXTS[:2], interventions=[Intervention("v", d, Op.ADD, alpha=2.0, layers=(0,))])
    np.testing.assert_allclose(steered[:, 0] - plain[:, 0], np.broadcast_to(2.0 * d[0], plain[:, 0].shape), atol=1e-4)
    assert np.abs(steered[:, 1] - plain[:, 1]).max() > 1e-3  # and later layers see its effect
    gen_only = Intervention("v", d, Op.ADD, alpha=2.0, scope=Scope.GENERATION)
    np.testing.assert_array_equal(capture_hidden_states(tiny_llama, TEXTS[:2], interventions=[gen_only]), plain)


def test_chat_template_and_token_ids(tiny_llama):
    raw = encode(tiny_llama, "hi")
    chat = encode(tiny_llama, "hi", chat=True)
    assert len(chat) > len(raw)
    assert tiny_llama.tokenizer.decode(chat).startswith("<|im_start|>user\nhi<|im_end|>")
    assert encode(tiny_llama, [1, 2, 3]) == [1, 2, 3]
    with_system = encode(tiny_llama, "hi", chat=True, system="be brief")
    assert "be brief" in tiny_llama.tokenizer.decode(with_system)
    a = capture_hidden_states(tiny_llama, ["hi"], chat=True)
    b = capture_hidden_states(tiny_llama, [chat])
    np.testing.assert_array_equal(a, b)


def test_empty_prompt_is_refused_and_hooks_are_gone(tiny_llama):
    with pytest.raises(ValueError, match="empty prompt"):
        capture_hidden_states(tiny_llama, ["abc", ""])
    assert not hooks_installed(tiny_llama.model)


def test_more_texts_than_one_batch(tiny_llama):
    texts = [f"t{i:02d}" for i in range(37)]  # equal length, more than the batch limit
    got = capture_hidden_states(tiny_llama, texts)
    assert got.shape[0] == 37
    np.testing.assert_allclose(got[36], capture_hidden_states(tiny_llama, texts[36:])[0], atol=1e-4)


def test_recorder_keeps_last_token_without_slicing_decode_steps():
    rec = Recorder(layers=frozenset({0, 2}))
    h_prompt = mx.arange(2 * 3 * 4, dtype=mx.float32).reshape(2, 3, 4)
    hook = ResidualHook(recorder=rec)
    for layer in range(3):
        assert hook(layer, h_prompt) is h_prompt
    assert sorted(rec.outputs) == [0, 2]
    assert rec.outputs[0].shape == (2, 1, 4)
    np.testing.assert_array_equal(np.array(rec.last_token_stack()), np.array(h_prompt)[:, [-1, -1], :])
    rec.clear()
    h_step = mx.ones((2, 1, 4))
    hook(0, h_step)
    assert rec.outputs[0] is h_step  # one token per row: kept as is
    rec_all = Recorder(last_only=False)
    rec_all.record(1, h_prompt)
    assert rec_all.outputs[1] is h_prompt
