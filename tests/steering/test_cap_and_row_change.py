"""Activation capping (op cap) and changing one running row's steering in a DecodeBatch."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_interp.steering.capture import Recorder, ResidualHook
from mlx_interp.steering.generation import steering_session
from mlx_interp.steering.hooks import layer_hooks
from mlx_interp.steering.interventions import Intervention, Op, Phase, RowSteering

TOKENS = [3, 17, 99, 42, 7, 250, 64, 5]
LAYER = 1
PROMPT_A = [5, 40, 41, 42, 43, 44, 45, 46, 47, 12]
PROMPT_B = [7, 8, 9]
FORCED = [33, 34, 35, 36, 37, 38]
TOL = 1e-4


def _directions(lm, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _hidden(lm, interventions):
    """(T, D) residual at LAYER after steering, for TOKENS as one prompt."""
    recorder = Recorder(last_only=False)
    hook = ResidualHook(steering=RowSteering.build([list(interventions)], Phase.PROMPT), recorder=recorder)
    with layer_hooks(lm.model, hook):
        mx.eval(lm.model(mx.array([TOKENS])), list(recorder.outputs.values()))
    return np.array(recorder.outputs[LAYER][0])


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL * max(1.0, float(np.abs(b).max())))


def test_cap_lowers_only_projections_above_the_bound(tiny_lm):
    d = _directions(tiny_lm)
    u = d[LAYER]
    before = _hidden(tiny_lm, [])
    p0 = before @ u
    bound = float(np.median(p0))  # some tokens above, some below
    assert (p0 > bound + 1e-3).any() and (p0 < bound - 1e-3).any()
    after = _hidden(tiny_lm, [Intervention("v", d, Op.CAP, layers=(LAYER,), value=bound)])
    p1 = after @ u
    expected = np.minimum(p0, bound)
    _close(p1, expected)
    # what is orthogonal to the direction is untouched
    _close(after - np.outer(p1, u), before - np.outer(p0, u))


def test_cap_needs_a_bound(tiny_lm):
    with pytest.raises(ValueError, match="cap on 'v' needs a value"):
        Intervention("v", _directions(tiny_lm), Op.CAP)


def test_cap_row_leaves_its_neighbour_exact(tiny_lm):
    d = _directions(tiny_lm)
    cap = Intervention("v", d, Op.CAP, value=-1e3)  # far below every projection: always acts
    with steering_session(tiny_lm, capture_layers=()) as batch:
        batch.add("A", batch.prefill(PROMPT_A), ())
        batch.add("B", batch.prefill(PROMPT_B), ())
        plain = [np.array(batch.step([t, t])[0]) for t in FORCED[:2]]
    with steering_session(tiny_lm, capture_layers=()) as batch:
        batch.add("A", batch.prefill(PROMPT_A), (cap,))
        batch.add("B", batch.prefill(PROMPT_B), ())
        capped = [np.array(batch.step([t, t])[0]) for t in FORCED[:2]]
    for p, c in zip(plain, capped):
        assert np.array_equal(p[1], c[1])  # bit for bit: an uncapped row gets h - 0
        assert float(np.abs(p[0] - c[0]).max()) > 1e-3


def test_set_interventions_changes_one_row_from_its_next_step(tiny_llama):
    lm = tiny_llama
    d = _directions(lm, seed=3)
    strong = (Intervention("s", d, Op.ADD, alpha=4.0),)

    def run(switch_at):
        out = []
        with steering_session(lm, capture_layers=()) as batch:
            batch.add("A", batch.prefill(PROMPT_A), ())
            batch.add("B", batch.prefill(PROMPT_B), ())
            for i, t in enumerate(FORCED):
                if i == switch_at:
                    batch.set_interventions("A", strong)
                    assert batch.interventions_of("A") == strong and batch.interventions_of("B") == ()
                out.append(np.array(batch.step([t, t])[0]))
        return out

    never, switched = run(None), run(3)
    for i in range(len(FORCED)):
        assert np.array_equal(never[i][1], switched[i][1])  # the neighbour never notices
        if i < 3:
            assert np.array_equal(never[i][0], switched[i][0])  # steps before the switch are untouched
        else:
            assert float(np.abs(never[i][0] - switched[i][0]).max()) > 1e-3
    with steering_session(lm, capture_layers=()) as batch:
        with pytest.raises(KeyError):
            batch.set_interventions("nobody", strong)
