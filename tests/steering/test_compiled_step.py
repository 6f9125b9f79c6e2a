"""The compiled decode step gives what the uncompiled one gives: tokens, logits, hidden states.

Every case decodes the same batch twice, once per path, on the tiny models of four families (and
the default model in the integration test), and compares step by step.
"""

import numpy as np
import pytest

import mlx.core as mx

from mlx_interp.steering.compiled_step import COMPILE_ENV, compile_enabled, supports
from mlx_interp.steering.generation import steering_session
from mlx_interp.steering.interventions import Intervention, Op

STEPS = 10
LONG = 250  # a prompt this long makes the batch cache grow (by 256) during decoding


def _directions(lm, seed):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def _add(lm, alpha=3.0):
    return Intervention("add", _directions(lm, 1), Op.ADD, alpha=alpha)


def _reflect(lm):
    layers = tuple(range(lm.num_layers))
    return Intervention("reflect", _directions(lm, 2), Op.REFLECT, alpha=1.0, layers=layers)


def _decode(lm, rows, compiled, capture=False, steps=STEPS, script=None):
    """Greedy decode of `rows` [(prompt, interventions)]; `script(step, batch)` may change the batch."""
    out = []
    with steering_session(lm, capture_layers=None if capture else (), compiled=compiled) as batch:
        firsts = []
        for uid, (prompt, ivs) in enumerate(rows):
            pre = batch.prefill(prompt, ivs)
            batch.add(uid, pre, ivs)
            firsts.append(int(mx.argmax(pre.logits.reshape(-1))))
        toks = dict(zip(range(len(rows)), firsts))
        for step in range(steps):
            if script is not None:
                script(step, batch, toks)
            logits, hidden = batch.step([toks[u] for u in batch.uids], capture=capture)
            nxt = mx.argmax(logits, axis=-1).tolist()
            out.append(
                {
                    "uids": list(batch.uids),
                    "tokens": nxt,
                    "logits": np.array(logits),
                    "hidden": None if hidden is None else np.array(hidden),
                }
            )
            toks = dict(zip(batch.uids, nxt))
        used = batch.compiled is not None and len(batch.compiled._fns) > 0
    return out, used


def _same(a, b):
    assert [s["uids"] for s in a] == [s["uids"] for s in b]
    assert [s["tokens"] for s in a] == [s["tokens"] for s in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x["logits"], y["logits"], rtol=0, atol=1e-4 * max(1.0, float(np.abs(y["logits"]).max())))
        assert (x["hidden"] is None) == (y["hidden"] is None)
        if x["hidden"] is not None:
            np.testing.assert_allclose(x["hidden"], y["hidden"], rtol=0, atol=1e-4 * max(1.0, float(np.abs(y["hidden"]).max())))


def _both(lm, rows, **kw):
    plain, used_plain = _decode(lm, rows, compiled=False, **kw)
    comp, used = _decode(lm, rows, compiled=True, **kw)
    assert used and not used_plain  # the compiled path really ran, the reference really did not
    _same(comp, plain)
    return comp, plain


def test_plain_batch(tiny_lm):
    _both(tiny_lm, [([5, 6, 7, 8], ()), ([9, 10], ())])


def test_steered_and_plain_rows_in_one_batch(tiny_lm):
    comp, _ = _both(tiny_lm, [([5, 6, 7, 8], (_add(tiny_lm),)), ([9, 10], ()), ([11, 12, 13], (_reflect(tiny_lm),))])
    unsteered, _ = _decode(tiny_lm, [([5, 6, 7, 8], ()), ([9, 10], ()), ([11, 12, 13], ())], compiled=True)
    # the steering reached the compiled step (it is an input, not lost in a trace)
    assert not np.allclose(comp[0]["logits"][0], unsteered[0]["logits"][0], atol=1e-3)


def test_probed_batch_returns_every_layer(tiny_lm):
    comp, _ = _both(tiny_lm, [([5, 6, 7, 8], (_add(tiny_lm),)), ([9, 10], ())], capture=True)
    assert comp[0]["hidden"].shape == (2, tiny_lm.num_layers, tiny_lm.hidden_size)


def test_rows_joining_leaving_and_resteered(tiny_llama):
    lm = tiny_llama
    add = _add(lm)

    def script(step, batch, toks):
        if step == 3:  # a row joins mid-decode
            pre = batch.prefill([20, 21, 22, 23, 24], ())
            batch.add(9, pre, ())
            toks[9] = int(mx.argmax(pre.logits.reshape(-1)))
        if step == 5:  # a guard re-steers a running row: the next step must see the new arrays
            batch.set_interventions(0, (Intervention("add", add.directions, Op.ADD, alpha=-3.0),))
        if step == 7:  # a row leaves
            batch.remove([1])

    comp, plain = _both(lm, [([5, 6, 7, 8], (add,)), ([9, 10], ())], script=script)
    assert comp[4]["uids"] == [0, 1, 9] and comp[-1]["uids"] == [0, 9]


def test_cache_growth_inside_decoding(tiny_qwen2):
    prompt = list(range(3, 3 + LONG))
    _both(tiny_qwen2, [(prompt, ()), ([9, 10], (_add(tiny_qwen2),))], steps=12)


def test_switch_and_unsupported_caches(monkeypatch):
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert not compile_enabled()
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert compile_enabled()
    assert not supports(None) and not supports([])


@pytest.fixture(scope="module")
def tiny_qwen2(tiny_model_dirs):
    from mlx_interp.steering.model import load_model

    return load_model(str(tiny_model_dirs["qwen2"]), dtype="float32", progress=False)


@pytest.mark.integration
def test_default_model_steered_and_probed_same_tokens(default_lm):
    from mlx_interp.gateway.catalog import SHIPPED_VECTORS
    from mlx_interp.steering.capture import encode
    from mlx_interp.steering.vectors import SteeringVector

    vec = SteeringVector.load(SHIPPED_VECTORS / "green_red.json", fingerprint=default_lm.fingerprint)
    question = encode(default_lm, "What colour is fresh grass? Answer with one word.", chat=True)
    rows = [(question, ()), (question, (vec.intervention(alpha=1.5),)), (question, (vec.intervention(alpha=1.0, op="reflect"),))]
    comp, _ = _both(default_lm, rows, capture=True, steps=12)
    assert comp[-1]["tokens"][0] != comp[-1]["tokens"][1] or any(s["tokens"][0] != s["tokens"][1] for s in comp)


def test_warm_up_traces_and_leaves_the_batch_empty(tiny_llama):
    with steering_session(tiny_llama, capture_layers=None, compiled=True) as batch:
        batch.warm_up()
        assert len(batch) == 0 and batch.cache is None
        assert len(batch.compiled._fns) == 2  # plain and probed
        pre = batch.prefill([5, 6, 7])
        batch.add("real", pre)
        logits, _ = batch.step([8], capture=False)
        assert logits.shape[0] == 1
