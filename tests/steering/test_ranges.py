"""Operations over a layer range act once (api.md section 3), on tiny models of three families.

A range of layers is one intervention: reflect mirrors once, reflect twice is the
identity, ablate and clamp hold the projection across the range, and the
per-row guarantees (a row never depends on its neighbours; an unsteered row is
exactly the unhooked model) still hold.
"""

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.steering.capture import Recorder, ResidualHook
from mlx_interp.steering.hooks import layer_hooks
from mlx_interp.steering.interventions import Intervention, Op, Phase, RowSteering

RANGE_FAMILIES = ("llama", "qwen2", "gemma")
DEPTH = 10
RANGE = tuple(range(3, 9))  # six layers, as the shipped vector's band
TOKENS = [[3, 17, 99, 42, 7, 250, 64, 5]]


@pytest.fixture(scope="module", params=RANGE_FAMILIES)
def deep_lm(request, tmp_path_factory):
    from tiny_models import make_tiny_model_dir

    from mlx_interp.steering.model import load_model

    path = make_tiny_model_dir(request.param, tmp_path_factory.mktemp(f"deep-{request.param}"), layers=DEPTH)
    return load_model(str(path), dtype="float32", progress=False)


def _shared_direction(lm, seed=0, norm=3.0):
    """The same unit direction at every layer (scaled to `norm`)."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(lm.hidden_size)
    u /= np.linalg.norm(u)
    return np.tile(u * norm, (lm.num_layers, 1)).astype(np.float32), u


def _run(lm, rows, tokens=None):
    """(logits (B, V), {layer: (B, T, D)}) with each row's interventions."""
    tokens = tokens or TOKENS * len(rows)
    recorder = Recorder(last_only=False)
    hook = ResidualHook(steering=RowSteering.build([list(r) for r in rows], Phase.PROMPT), recorder=recorder)
    with layer_hooks(lm.model, hook):
        logits = lm.model(mx.array(tokens))
        mx.eval(logits, list(recorder.outputs.values()))
    return np.array(logits), {l: np.array(h) for l, h in recorder.outputs.items()}


def _plain(lm, n=1):
    logits = lm.model(mx.array(TOKENS * n))
    return np.array(logits)


def test_reflect_twice_is_the_identity(deep_lm):
    d, _ = _shared_direction(deep_lm)
    midpoints = np.linspace(-1, 2, deep_lm.num_layers).astype(np.float32)
    reflect = Intervention("v", d, Op.REFLECT, layers=RANGE, midpoints=midpoints)
    logits, states = _run(deep_lm, [[reflect, reflect]])
    plain_logits, plain_states = _run(deep_lm, [[]])
    scale = max(np.abs(plain_states[l]).max() for l in RANGE)
    for layer in RANGE:
        np.testing.assert_allclose(states[layer], plain_states[layer], rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(logits, plain_logits, rtol=0, atol=1e-3 * max(1.0, np.abs(plain_logits).max()))
    once, _ = _run(deep_lm, [[reflect]])
    assert np.abs(once - plain_logits).max() > 1e-2  # a single reflect does change the output


def test_reflect_over_a_range_mirrors_the_final_projection_once(deep_lm):
    """The last layer's projection is about the single mirror 2m - p, unlike one mirror per layer."""
    d, u = _shared_direction(deep_lm, seed=1)
    # The direction the blocks actually write along: the mean difference of two token sets would do;
    # here the component of the unsteered stream itself, so the mirror has something to move.
    _, plain = _run(deep_lm, [[]])
    last = RANGE[-1]
    h_last = plain[last][0]
    u = h_last.mean(axis=0) / np.linalg.norm(h_last.mean(axis=0))
    d = np.tile(u * 3.0, (deep_lm.num_layers, 1)).astype(np.float32)
    _, ranged = _run(deep_lm, [[Intervention("v", d, Op.REFLECT, layers=RANGE)]])
    p_plain = plain[last][0] @ u
    p_ranged = ranged[last][0] @ u
    # the old meaning, one mirror of the stream at every layer, for comparison
    per_layer = [Intervention("v", d, Op.REFLECT, layers=(l,)) for l in RANGE]
    _, stacked = _run(deep_lm, [per_layer])
    p_stacked = stacked[last][0] @ u
    target = -p_plain
    err_ranged = np.abs(p_ranged - target).mean()
    err_stacked = np.abs(p_stacked - target).mean()
    assert np.sign(p_ranged).tolist() == np.sign(target).tolist()
    assert err_ranged < 0.6 * np.abs(target).mean()
    assert err_ranged < 0.5 * err_stacked


@pytest.mark.parametrize("op", [Op.ABLATE, Op.CLAMP])
def test_ablate_and_clamp_hold_the_projection_across_the_range(deep_lm, op):
    d, u = _shared_direction(deep_lm, seed=2)
    value = 4.0 if op is Op.CLAMP else 0.0
    iv = Intervention("v", d, op, layers=RANGE, value=value if op is Op.CLAMP else None)
    _, plain = _run(deep_lm, [[]])
    _, states = _run(deep_lm, [[iv]])
    scale = max(np.abs(plain[l]).max() for l in RANGE)
    for layer in RANGE:
        p = states[layer][0] @ u
        np.testing.assert_allclose(p, np.full_like(p, value), rtol=0, atol=1e-4 * scale)
    after = RANGE[-1] + 1  # the block after the range writes freely again
    assert np.abs(states[after][0] @ u - value).max() > 1e-3


def test_partial_ablation_over_a_range_scales_once(deep_lm):
    """ablate alpha 0.5 over six layers leaves about half the component, not 1/64 of it."""
    _, plain = _run(deep_lm, [[]])
    last = RANGE[-1]
    u = plain[last][0].mean(axis=0)
    u /= np.linalg.norm(u)
    d = np.tile(u * 2.0, (deep_lm.num_layers, 1)).astype(np.float32)
    _, states = _run(deep_lm, [[Intervention("v", d, Op.ABLATE, alpha=0.5, layers=RANGE)]])
    ratio = (states[last][0] @ u).mean() / (plain[last][0] @ u).mean()
    assert 0.3 < ratio < 0.7


def test_rows_with_range_ops_do_not_depend_on_their_neighbours(deep_lm):
    d, _ = _shared_direction(deep_lm, seed=3)
    rng = np.random.default_rng(4)
    other = rng.standard_normal(d.shape).astype(np.float32)
    midpoints = np.linspace(0, 1, deep_lm.num_layers).astype(np.float32)
    rows = [
        [Intervention("v", d, Op.REFLECT, layers=RANGE, midpoints=midpoints)],
        [],
        [Intervention("v", d, Op.CLAMP, layers=(4, 5, 6), value=-2.0), Intervention("w", other, Op.ADD, alpha=1.5, layers=RANGE)],
        [Intervention("v", d, Op.ABLATE, alpha=0.7, layers=(2, 3)), Intervention("v", d, Op.REFLECT, layers=RANGE, midpoints=midpoints)],
    ]
    batched, _ = _run(deep_lm, rows)
    plain = _plain(deep_lm, len(rows))
    for r, row in enumerate(rows):
        alone, _ = _run(deep_lm, [row])
        np.testing.assert_allclose(batched[r], alone[0], rtol=0, atol=1e-4 * max(1.0, np.abs(alone).max()))
    np.testing.assert_array_equal(batched[1], plain[1])  # the unsteered row: exactly the unhooked model
