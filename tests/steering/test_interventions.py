"""The algebra of each operation, read off the recorded residual stream at the hooked layer."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.steering.capture import Recorder, ResidualHook
from mlx_interp.steering.hooks import layer_hooks
from mlx_interp.steering.interventions import Intervention, Op, Phase, RowSteering, Scope

TOKENS = [[3, 17, 99, 42, 7, 250, 64, 5]]
LAYER = 1


def _directions(lm, seed=0, norm=3.0):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True) * norm


class _InOutHook:
    """Records each layer's hidden state before and after the steering."""

    wants_block_input = True

    def __init__(self, steering):
        self.steering = steering
        self.seen = {}

    def __call__(self, layer, h, block_input=None):
        out = self.steering.apply(layer, h, block_input) if self.steering is not None else h
        self.seen[layer] = (np.array(h[0]), np.array(out[0]))
        return out


def _run(lm, interventions, phase=Phase.PROMPT, tokens=TOKENS):
    """(logits, {layer: (T, D) recorded residual after steering})."""
    recorder = Recorder(last_only=False)
    hook = ResidualHook(steering=RowSteering.build([list(interventions)], phase), recorder=recorder)
    with layer_hooks(lm.model, hook):
        logits = lm.model(mx.array(tokens))
        mx.eval(logits, list(recorder.outputs.values()))
    return np.array(logits), {l: np.array(h[0]) for l, h in recorder.outputs.items()}


def _unit(v):
    return v / np.linalg.norm(v)


def _close(a, b, scale):
    """Equal up to float32 rounding relative to the size of the hidden state."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, float(scale)))


@pytest.fixture
def plain(tiny_lm):
    return _run(tiny_lm, [])


def test_add_moves_the_projection_by_alpha_times_norm(tiny_lm, plain):
    d = _directions(tiny_lm)
    v = d[LAYER]
    _, before = plain
    _, after = _run(tiny_lm, [Intervention("v", d, Op.ADD, alpha=2.5, layers=(LAYER,))])
    h0, h1 = before[LAYER], after[LAYER]
    scale = np.abs(h0).max()
    _close(h1 - h0, np.broadcast_to(2.5 * v, h0.shape), scale)
    _close(h1 @ _unit(v) - h0 @ _unit(v), np.full(h0.shape[0], 2.5 * np.linalg.norm(v)), scale)
    for layer in range(LAYER):  # layers before the hooked one are untouched
        np.testing.assert_array_equal(before[layer], after[layer])


def test_negative_alpha_subtracts(tiny_lm, plain):
    d = _directions(tiny_lm)
    _, before = plain
    _, after = _run(tiny_lm, [Intervention("v", d, Op.ADD, alpha=-1.5, layers=(LAYER,))])
    _close(after[LAYER] - before[LAYER], np.broadcast_to(-1.5 * d[LAYER], before[LAYER].shape), np.abs(before[LAYER]).max())


def _split(h, u):
    p = h @ u
    return p, h - p[:, None] * u


def test_ablate_leaves_zero_projection(tiny_lm, plain):
    d = _directions(tiny_lm)
    u = _unit(d[LAYER])
    _, before = plain
    _, after = _run(tiny_lm, [Intervention("v", d, Op.ABLATE, layers=(LAYER,))])
    p0, rest0 = _split(before[LAYER], u)
    p1, rest1 = _split(after[LAYER], u)
    scale = np.abs(before[LAYER]).max()
    assert np.abs(p0).max() > 0.1  # there was something to remove
    _close(p1, np.zeros_like(p1), scale)
    _close(rest1, rest0, scale)  # the orthogonal part is kept


def test_partial_ablation_scales_the_projection(tiny_lm, plain):
    d = _directions(tiny_lm)
    u = _unit(d[LAYER])
    _, before = plain
    _, after = _run(tiny_lm, [Intervention("v", d, Op.ABLATE, alpha=0.25, layers=(LAYER,))])
    _close(after[LAYER] @ u, 0.75 * (before[LAYER] @ u), np.abs(before[LAYER]).max())


def test_reflect_flips_the_projection_sign(tiny_lm, plain):
    d = _directions(tiny_lm)
    u = _unit(d[LAYER])
    _, before = plain
    _, after = _run(tiny_lm, [Intervention("v", d, Op.REFLECT, layers=(LAYER,))])
    p0, rest0 = _split(before[LAYER], u)
    p1, rest1 = _split(after[LAYER], u)
    scale = np.abs(before[LAYER]).max()
    _close(p1, -p0, scale)
    _close(rest1, rest0, scale)


def test_reflect_about_a_midpoint(tiny_lm, plain):
    d = _directions(tiny_lm)
    u = _unit(d[LAYER])
    midpoints = np.linspace(-2, 2, tiny_lm.num_layers).astype(np.float32)
    m = float(midpoints[LAYER])
    _, before = plain
    _, after = _run(tiny_lm, [Intervention("v", d, Op.REFLECT, layers=(LAYER,), midpoints=midpoints)])
    _close(after[LAYER] @ u, 2 * m - before[LAYER] @ u, np.abs(before[LAYER]).max())


def test_clamp_sets_the_projection(tiny_lm, plain):
    d = _directions(tiny_lm)
    u = _unit(d[LAYER])
    _, before = plain
    _, after = _run(tiny_lm, [Intervention("v", d, Op.CLAMP, layers=(LAYER,), value=4.25)])
    p1, rest1 = _split(after[LAYER], u)
    _, rest0 = _split(before[LAYER], u)
    scale = np.abs(before[LAYER]).max()
    _close(p1, np.full_like(p1, 4.25), scale)
    _close(rest1, rest0, scale)


def test_zero_alpha_add_changes_nothing(tiny_lm, plain):
    logits, _ = plain
    steered, _ = _run(tiny_lm, [Intervention("v", _directions(tiny_lm), Op.ADD, alpha=0.0)])
    np.testing.assert_array_equal(logits, steered)


@pytest.mark.parametrize("op", [Op.ADD, Op.ABLATE, Op.REFLECT, Op.CLAMP])
def test_only_the_chosen_layers_are_changed(tiny_lm, op):
    chosen = (0, tiny_lm.num_layers - 1)
    iv = Intervention("v", _directions(tiny_lm), op, alpha=1.5, layers=chosen, value=2.0 if op is Op.CLAMP else None)
    hook = _InOutHook(RowSteering.build([[iv]], Phase.PROMPT))
    with layer_hooks(tiny_lm.model, hook):
        mx.eval(tiny_lm.model(mx.array(TOKENS)))
    assert sorted(hook.seen) == list(range(tiny_lm.num_layers))
    for layer, (h_in, h_out) in hook.seen.items():
        if layer in chosen:
            assert not np.array_equal(h_in, h_out), f"layer {layer} should be steered"
        else:
            np.testing.assert_array_equal(h_in, h_out)


def test_several_interventions_compose_in_order(tiny_lm, plain):
    """add v then ablate v: the ablation sees (and removes) the added component too."""
    d = _directions(tiny_lm)
    u = _unit(d[LAYER])
    _, after = _run(
        tiny_lm,
        [Intervention("v", d, Op.ADD, alpha=3.0, layers=(LAYER,)), Intervention("v", d, Op.ABLATE, layers=(LAYER,))],
    )
    _close(after[LAYER] @ u, np.zeros(after[LAYER].shape[0]), np.abs(plain[1][LAYER]).max())


def test_two_adds_on_one_layer_sum(tiny_lm, plain):
    d1, d2 = _directions(tiny_lm, seed=1), _directions(tiny_lm, seed=2)
    _, before = plain
    _, after = _run(
        tiny_lm,
        [Intervention("a", d1, Op.ADD, alpha=1.0, layers=(LAYER,)), Intervention("b", d2, Op.ADD, alpha=-2.0, layers=(LAYER,))],
    )
    expected = d1[LAYER] - 2.0 * d2[LAYER]
    _close(after[LAYER] - before[LAYER], np.broadcast_to(expected, before[LAYER].shape), np.abs(before[LAYER]).max())


# -- RowSteering bookkeeping -----------------------------------------------------------------


def test_build_is_none_when_no_row_is_active():
    d = np.ones((3, 8), np.float32)
    gen_only = Intervention("g", d, scope=Scope.GENERATION)
    assert RowSteering.build([[], []], Phase.PROMPT) is None
    assert RowSteering.build([[gen_only]], Phase.PROMPT) is None
    assert RowSteering.build([[gen_only]], Phase.GENERATION) is not None


def test_rows_get_their_own_coefficients():
    """Two rows sharing one direction with different ops/strengths; a third row unsteered."""
    d = np.zeros((2, 4), np.float32)
    d[:, 0] = 2.0  # v = 2·e0 at both layers
    rows = [
        [Intervention("v", d, Op.ADD, alpha=1.0, layers=(0,))],
        [Intervention("v", d, Op.CLAMP, layers=(0,), value=5.0)],
        [],
    ]
    steering = RowSteering.build(rows, Phase.PROMPT)
    h = mx.array(np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4))
    out = np.array(steering.apply(0, h))
    hn = np.array(h)
    np.testing.assert_array_equal(out[0], hn[0] + np.array([2.0, 0, 0, 0], np.float32))
    np.testing.assert_array_equal(out[1][:, 0], [5.0, 5.0])
    np.testing.assert_array_equal(out[1][:, 1:], hn[1][:, 1:])
    np.testing.assert_array_equal(out[2], hn[2])
    np.testing.assert_array_equal(np.array(steering.apply(1, h)), hn)  # layer 1 not chosen


def _sequential(h, interventions, layer):
    """Reference: each intervention applied in the order given, in float64."""
    h = h.astype(np.float64)
    for iv in interventions:
        v = iv.directions[layer].astype(np.float64)
        if iv.op is Op.ADD:
            h = h + iv.alpha * v
            continue
        u = v / np.linalg.norm(v)
        p = h @ u
        target = {Op.ABLATE: (1 - iv.alpha) * p, Op.CLAMP: np.full_like(p, iv.value)}[iv.op]
        h = h + (target - p)[..., None] * u
    return h


def test_each_row_gets_its_own_order_whatever_its_neighbours_ask():
    """Add-then-ablate and ablate-then-add differ; a row's result must not depend on the rows beside it."""
    v = np.zeros((1, 4), np.float32)
    v[0, 0] = 1.0
    w = np.array([[3.0, 1.0, 0.0, 0.0]], np.float32)  # has a component along v
    add_w = Intervention("w", w, Op.ADD, alpha=1.0, layers=(0,))
    ablate_v = Intervention("v", v, Op.ABLATE, layers=(0,))
    clamp_v = Intervention("v", v, Op.CLAMP, layers=(0,), value=-2.0)
    rows = [[ablate_v, add_w], [add_w, ablate_v], [add_w, ablate_v, add_w], [clamp_v, add_w, ablate_v]]
    h = np.arange(len(rows) * 2 * 4, dtype=np.float32).reshape(len(rows), 2, 4) - 7.0
    batched = np.array(RowSteering.build(rows, Phase.PROMPT).apply(0, mx.array(h)))
    for r, row in enumerate(rows):
        alone = np.array(RowSteering.build([row], Phase.PROMPT).apply(0, mx.array(h[r : r + 1])))[0]
        expected = _sequential(h[r], row, 0)
        np.testing.assert_allclose(alone, expected, atol=1e-5)
        np.testing.assert_allclose(batched[r], expected, atol=1e-5)


def test_apply_refuses_a_batch_of_another_size():
    d = np.ones((1, 4), np.float32)
    steering = RowSteering.build([[Intervention("v", d)]], Phase.PROMPT)
    with pytest.raises(ValueError, match="built for 1 rows"):
        steering.apply(0, mx.zeros((2, 1, 4)))


def test_add_keeps_the_hidden_dtype():
    d = np.ones((1, 4), np.float32)
    steering = RowSteering.build([[Intervention("v", d, alpha=0.5)]], Phase.PROMPT)
    for dtype in (mx.float16, mx.bfloat16, mx.float32):
        out = steering.apply(0, mx.ones((1, 2, 4), dtype=dtype))
        assert out.dtype == dtype
        assert np.allclose(np.array(out.astype(mx.float32)), 1.5)


def test_intervention_validation():
    d = np.ones((4, 8), np.float32)
    with pytest.raises(ValueError, match="needs a value"):
        Intervention("c", d, Op.CLAMP)
    with pytest.raises(ValueError, match=r"layers \[4\] out of range"):
        Intervention("v", d, layers=(1, 4))
    with pytest.raises(ValueError):
        Intervention("v", d, op="scale")
    iv = Intervention("v", d, op="reflect", scope="prompt")
    assert iv.op is Op.REFLECT and iv.scope is Scope.PROMPT
    assert iv.layers == (0, 1, 2, 3) and iv.key == "v"
    assert iv.active_in(Phase.PROMPT) and not iv.active_in(Phase.GENERATION)
