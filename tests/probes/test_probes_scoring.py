"""ProbeBank: every probe at every layer in one matmul, equal to the per-probe numpy reference."""

import re

import mlx.core as mx
import numpy as np
import pytest

from probe_factory import build_probe
from mlx_interp.probes.scoring import ProbeBank

L, D = 6, 16


def _bank_probes():
    return [
        build_probe(name="a", layers=(0, 2, 5), hidden=D, num_layers=L, seed=1),
        build_probe(name="b", layers=(3,), hidden=D, num_layers=L, seed=2),
        build_probe(name="c", layers=tuple(range(L)), hidden=D, num_layers=L, seed=3),
        build_probe(name="d", layers=(5, 1), hidden=D, num_layers=L, seed=4),
    ]


def test_scores_equal_the_numpy_reference():
    probes = _bank_probes()
    bank = ProbeBank(probes, num_layers=L, hidden_size=D)
    hidden = np.random.default_rng(0).normal(scale=3.0, size=(5, L, D)).astype(np.float32)
    scores = np.array(bank.scores(mx.array(hidden)))
    assert scores.shape == (5, L, len(probes))
    for j, probe in enumerate(probes):
        ref = probe.score_numpy(hidden)  # (N, K)
        for k, layer in enumerate(probe.layers):
            np.testing.assert_allclose(scores[:, layer, j], ref[:, k], atol=1e-4)
        missing = [l for l in range(L) if l not in probe.layers]
        assert np.all(np.isnan(scores[:, missing, j]))
    assert bank.names == ["a", "b", "c", "d"] and bank.best_layers == [5, 3, 5, 1]
    assert bank.index("c") == 2 and bank.layers_used == list(range(L))
    with pytest.raises(KeyError):
        bank.index("zzz")


def test_logits_are_the_inverse_sigmoid_of_scores():
    bank = ProbeBank(_bank_probes(), num_layers=L, hidden_size=D)
    hidden = mx.array(np.random.default_rng(1).normal(size=(2, L, D)).astype(np.float32))
    logits = np.array(bank.logits(hidden))
    scores = np.array(bank.scores(hidden))
    mask = ~np.isnan(scores)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits[mask])), scores[mask], atol=1e-6)


def test_best_scores_read_each_probe_at_its_best_layer():
    probes = _bank_probes()
    bank = ProbeBank(probes, num_layers=L, hidden_size=D)
    hidden = np.random.default_rng(2).normal(size=(3, L, D)).astype(np.float32)
    best = np.array(bank.best_scores(bank.scores(mx.array(hidden))))
    for j, probe in enumerate(probes):
        k = probe.layers.index(probe.best_layer)
        np.testing.assert_allclose(best[:, j], probe.score_numpy(hidden)[:, k], atol=1e-4)


def test_scores_stay_lazy():
    bank = ProbeBank(_bank_probes(), num_layers=L, hidden_size=D)
    out = bank.scores(mx.zeros((1, L, D)))
    assert isinstance(out, mx.array)


def test_half_precision_bank_is_close():
    probes = _bank_probes()
    bank = ProbeBank(probes, num_layers=L, hidden_size=D, dtype=mx.bfloat16)
    hidden = np.random.default_rng(3).normal(size=(2, L, D)).astype(np.float32)
    scores = np.array(bank.scores(mx.array(hidden)))
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores[:, 3, 1], probes[1].score_numpy(hidden)[:, 0], atol=0.05)


def _graph_ops(tmp_path, array) -> list[str]:
    dot = tmp_path / "graph.dot"
    mx.export_to_dot(str(dot), array)
    return re.findall(r'label ="([A-Za-z]+)"', dot.read_text())


def test_eight_probes_cost_one_matmul(tmp_path):
    """The computation graph of scores holds exactly one Matmul, whatever the number of probes and layers."""
    layers, hidden = 30, 64
    probes = [
        build_probe(name=f"p{i}", layers=tuple(range(i % 3, layers, 1 + i % 4)), hidden=hidden, num_layers=layers, seed=i)
        for i in range(8)
    ]
    bank = ProbeBank(probes, num_layers=layers, hidden_size=hidden)
    assert tuple(bank.W.shape) == (layers, hidden, 8)
    for batch in (1, 4):
        ops = _graph_ops(tmp_path, bank.scores(mx.zeros((batch, layers, hidden))))
        assert ops.count("Matmul") == 1, ops
        assert not {"AddMM", "Gather"} & set(ops)


def test_refuses_mismatched_probes_and_inputs():
    with pytest.raises(ValueError, match="hidden size"):
        ProbeBank([build_probe(hidden=8)], num_layers=4, hidden_size=16)
    with pytest.raises(ValueError, match="reads layer 3"):
        ProbeBank([build_probe(layers=(3,))], num_layers=3, hidden_size=8)
    with pytest.raises(ValueError, match="duplicate"):
        ProbeBank([build_probe(), build_probe()], num_layers=4, hidden_size=8)
    with pytest.raises(ValueError, match="at least one"):
        ProbeBank([], num_layers=4, hidden_size=8)
    bank = ProbeBank([build_probe()], num_layers=4, hidden_size=8)
    with pytest.raises(ValueError, match="expected hidden"):
        bank.scores(mx.zeros((1, 3, 8)))


def test_compiled_scores_equal_the_uncompiled_expression(monkeypatch):
    """The compiled scorer (one shapeless trace for every batch size) gives exactly what the plain ops give."""
    from mlx_interp.probes import scoring

    bank = ProbeBank(_bank_probes(), num_layers=L, hidden_size=D)
    rng = np.random.default_rng(5)
    for batch in (1, 3, 8, 1, 17):
        hidden = mx.array(rng.normal(scale=2.0, size=(batch, L, D)).astype(np.float32))
        compiled = np.array(bank.scores(hidden))
        plain = np.array(scoring._scores(hidden, bank.W, bank.b, bank.mask, bank._nan))
        np.testing.assert_array_equal(compiled, plain)  # NaN where a probe has no weights, on both sides
        monkeypatch.setenv("MLX_INTERP_COMPILE", "0")
        np.testing.assert_array_equal(np.array(bank.scores(hidden)), plain)
        monkeypatch.delenv("MLX_INTERP_COMPILE")
