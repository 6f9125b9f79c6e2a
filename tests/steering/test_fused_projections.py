"""Fused q/k/v and gate/up projections (steering/fused_projections.py) compute what the separate ones do.

Every comparison loads the same tiny model twice, fused (the default) and with MLX_INTERP_FUSE=0,
and decodes the same prompts through the engine's own paths (uncompiled and compiled steps, and
`generate`).
"""

import gc

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_interp.steering.fused_projections import (
    FUSE_ENV,
    FusedPart,
    FusedProjection,
    fuse_enabled,
    fuse_projections,
    fused_source,
)
from mlx_interp.steering.generation import generate, steering_session
from mlx_interp.steering.interventions import Intervention, Op
from mlx_interp.steering.model import load_model

FUSED_FAMILIES = ("llama", "qwen2", "gemma")  # q/k/v and gate/up as separate Linear layers in mlx-lm
STEPS = 8
PROMPTS = [[3, 17, 99, 42, 7], [250, 64, 5, 11, 12, 13, 14, 200]]


def _load(path, fuse: bool, monkeypatch, dtype="float32"):
    monkeypatch.setenv(FUSE_ENV, "1" if fuse else "0")
    return load_model(str(path), dtype=dtype, progress=False)


def _groups(model):
    return [m for _, m in model.named_modules() if isinstance(m, FusedProjection)]


def _steer(lm):
    rng = np.random.default_rng(0)
    d = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    return Intervention("add", d / np.linalg.norm(d, axis=1, keepdims=True), Op.ADD, alpha=2.0)


def _decode(lm, compiled, steer=False):
    """Greedy decode of PROMPTS as one batch: per step, the tokens, logits and captured hidden states."""
    out = []
    with steering_session(lm, capture_layers=None, compiled=compiled) as batch:
        toks = []
        for uid, prompt in enumerate(PROMPTS):
            ivs = (_steer(lm),) if steer and uid == 1 else ()
            pre = batch.prefill(prompt, ivs)
            batch.add(uid, pre, ivs)
            toks.append(int(mx.argmax(pre.logits.reshape(-1))))
            out.append(("prefill", [toks[-1]], np.array(pre.logits), None))
        for _ in range(STEPS):
            logits, hidden = batch.step(toks, capture=True)
            toks = mx.argmax(logits, axis=-1).tolist()
            out.append(("step", toks, np.array(logits), np.array(hidden)))
        used = batch.compiled is not None and len(batch.compiled._fns) > 0
    assert used == compiled
    return out


def _same(a, b, tol=1e-5):
    assert [s[1] for s in a] == [s[1] for s in b]  # the same tokens, step by step
    for x, y in zip(a, b):
        np.testing.assert_allclose(x[2], y[2], rtol=0, atol=tol * max(1.0, float(np.abs(y[2]).max())))
        if y[3] is not None:
            np.testing.assert_allclose(x[3], y[3], rtol=0, atol=tol * max(1.0, float(np.abs(y[3]).max())))


@pytest.fixture(scope="module")
def pairs(tiny_model_dirs):
    """(fused, unfused) loads of every tiny family, float32."""
    mp = pytest.MonkeyPatch()
    try:
        return {f: (_load(d, True, mp), _load(d, False, mp)) for f, d in tiny_model_dirs.items()}
    finally:
        mp.undo()


def test_families_with_separate_projections_are_fused(pairs):
    for family, (fused, plain) in pairs.items():
        layers = fused.layers
        if family in FUSED_FAMILIES:
            assert len(_groups(fused.model)) == 2 * len(layers)
            attn, mlp = layers[0].self_attn, layers[0].mlp
            assert isinstance(attn.q_proj, FusedProjection) and isinstance(attn.k_proj, FusedPart)
            assert isinstance(attn.v_proj, FusedPart) and isinstance(mlp.gate_proj, FusedProjection)
            assert isinstance(mlp.up_proj, FusedPart)
            assert type(attn.q_proj.fused) is nn.Linear
        else:  # phi3: qkv_proj and gate_up_proj are one product already
            assert _groups(fused.model) == []
        assert _groups(plain.model) == []
        assert fused.fingerprint == plain.fingerprint


@pytest.mark.parametrize("family", ("llama", "qwen2", "gemma", "phi3"))
@pytest.mark.parametrize("compiled", (False, True))
def test_decode_is_unchanged(pairs, family, compiled):
    fused, plain = pairs[family]
    _same(_decode(fused, compiled, steer=True), _decode(plain, compiled, steer=True))


@pytest.mark.parametrize("family", FUSED_FAMILIES)
def test_generate_gives_the_same_tokens(pairs, family):
    fused, plain = pairs[family]
    prompts = ["hello there", "the quick brown fox"]
    a = generate(fused, prompts, max_tokens=12)
    b = generate(plain, prompts, max_tokens=12)
    assert [g.tokens for g in a] == [g.tokens for g in b]


@pytest.mark.parametrize("compiled", (False, True))
def test_parts_are_taken_not_recomputed(pairs, monkeypatch, compiled):
    """In mlx-lm's own attention and MLP code (and in the compiled step's trace) k, v and up are the remembered parts."""
    fused, _ = pairs["llama"]

    def fail(*_):
        raise AssertionError("a part computed its own product")

    monkeypatch.setattr(FusedProjection, "part_product", fail)
    _decode(fused, compiled=compiled)
    for owner in _groups(fused.model):
        assert owner.shared.current is None


def _stats(model):
    params = tree_flatten(model.parameters())
    return sum(v.size for _, v in params), sum(v.nbytes for _, v in params)


@pytest.mark.parametrize("quantize", (False, True))
def test_no_duplicated_weights(tiny_model_dirs, monkeypatch, quantize):
    lm = _load(tiny_model_dirs["qwen2"], False, monkeypatch)  # qwen2: q/k/v carry biases
    if quantize:
        nn.quantize(lm.model, group_size=32, bits=4)
    mx.eval(lm.model.parameters())
    gc.collect()
    before_stats, before_mem = _stats(lm.model), mx.get_active_memory()
    assert fuse_projections(lm.model) == 2 * lm.num_layers
    mx.eval(lm.model.parameters())
    gc.collect()
    assert _stats(lm.model) == before_stats
    fused_bytes = sum(v.nbytes for owner in _groups(lm.model) for _, v in tree_flatten(owner.fused.parameters()))
    # The separate weights were freed: kept alongside the fused copy, memory would grow by fused_bytes.
    # (Not "<= before": the process's active memory also holds whatever else is alive, a few KB that
    # move between the two readings when the whole suite runs in one process.)
    assert mx.get_active_memory() - before_mem < fused_bytes / 4


def test_switch_off_leaves_modules_untouched(tiny_model_dirs, monkeypatch):
    lm = _load(tiny_model_dirs["llama"], False, monkeypatch)
    assert not fuse_enabled()
    layer = lm.layers[0]
    for mod in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                layer.mlp.gate_proj, layer.mlp.up_proj):
        assert type(mod) is nn.Linear
    monkeypatch.delenv(FUSE_ENV)
    assert fuse_enabled()


@pytest.mark.parametrize("family", ("llama", "gemma"))
def test_quantized_model_matches(tiny_model_dirs, monkeypatch, family):
    a = _load(tiny_model_dirs[family], False, monkeypatch)
    b = _load(tiny_model_dirs[family], False, monkeypatch)
    for lm in (a, b):
        nn.quantize(lm.model, group_size=32, bits=4)
    assert fuse_projections(a.model) == 2 * a.num_layers
    q = fused_source(a.layers[0].self_attn.k_proj)
    assert type(q) is nn.QuantizedLinear and q.bits == 4 and q.group_size == 32
    for compiled in (False, True):
        _same(_decode(a, compiled), _decode(b, compiled), tol=1e-4)


def _parent(kind, dtype=mx.float32, bias=False, sizes=(64, 32, 32), quant=None):
    mx.random.seed(3)
    parent = nn.Module()
    for name, out in zip(("q_proj", "k_proj", "v_proj"), sizes):
        lin = nn.Linear(48 if quant is None else 64, out, bias=bias)
        if bias:
            lin.bias = mx.random.normal((out,))
        lin.set_dtype(dtype)
        if kind == "quantized":
            lin = nn.QuantizedLinear.from_linear(lin, group_size=32, bits=(quant or {}).get(name, 4))
        setattr(parent, name, lin)
    return parent


@pytest.mark.parametrize("dtype", (mx.float32, mx.float16, mx.bfloat16))
@pytest.mark.parametrize("bias", (False, True))
@pytest.mark.parametrize("kind", ("linear", "quantized"))
def test_parts_called_with_other_inputs_stay_right(dtype, bias, kind):
    """k/v called with another array than q's (no family does) compute their own product."""
    ref = _parent(kind, dtype, bias, quant={} if kind == "quantized" else None)
    fused = _parent(kind, dtype, bias, quant={} if kind == "quantized" else None)
    assert fuse_projections(fused) == 1
    dim = 48 if kind == "linear" else 64
    x = mx.random.normal((2, 3, dim)).astype(dtype)
    x2 = mx.random.normal((2, 3, dim)).astype(dtype)
    tol = 1e-5 if dtype == mx.float32 else 2e-2

    def check(got, want):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(np.array(got.astype(mx.float32)), np.array(want.astype(mx.float32)), rtol=tol, atol=tol)

    # The usual order: q, then k and v of the very same array.
    check(fused.q_proj(x), ref.q_proj(x))
    check(fused.k_proj(x), ref.k_proj(x))
    check(fused.v_proj(x), ref.v_proj(x))
    assert fused.q_proj.shared.x is None  # both parts taken: nothing remembered
    # k and v of another array, and of the same array twice.
    check(fused.q_proj(x), ref.q_proj(x))
    check(fused.k_proj(x2), ref.k_proj(x2))
    check(fused.v_proj(x2), ref.v_proj(x2))
    check(fused.k_proj(x), ref.k_proj(x))
    check(fused.k_proj(x), ref.k_proj(x))  # already taken: computed again from its slice
    check(fused.v_proj(x), ref.v_proj(x))
    # Before q has ever run on it.
    check(fused.v_proj(x2), ref.v_proj(x2))
    # q of another array in between: k and v of the first are not handed the second's parts.
    check(fused.q_proj(x), ref.q_proj(x))
    check(fused.q_proj(x2), ref.q_proj(x2))
    check(fused.k_proj(x), ref.k_proj(x))
    check(fused.v_proj(x2), ref.v_proj(x2))


def test_a_part_of_a_flattened_product_flattens_too(monkeypatch):
    """On CUDA the fused layer's product takes a batch's rows as one matmul (quantized_rows); a part
    computed on its own (the path above) must too, or it falls back to one product per row."""
    from mlx_interp.steering import quantized_rows

    ref = _parent("quantized", mx.float32, True, quant={})
    fused = _parent("quantized", mx.float32, True, quant={})
    assert fuse_projections(fused) == 1
    assert quantized_rows.flatten_quantized_rows(fused) == 1
    seen = []
    real = quantized_rows.rows_product
    monkeypatch.setattr(quantized_rows, "rows_product", lambda x, *a: seen.append(x.shape) or real(x, *a))
    x = mx.random.normal((5, 1, 64))
    got, want = fused.v_proj(x), ref.v_proj(x)  # q has not run on x: v is computed from its slice alone
    assert seen == [(5, 1, 64)]
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-5)


def test_mismatched_projections_are_left_alone():
    bits = _parent("quantized", quant={"k_proj": 8})
    assert fuse_projections(bits) == 0 and type(bits.q_proj) is nn.QuantizedLinear
    mixed = _parent("quantized", quant={})
    mixed.k_proj = nn.Linear(64, 32)
    assert fuse_projections(mixed) == 0
    groups = _parent("quantized", quant={})
    groups.v_proj = nn.QuantizedLinear.from_linear(nn.Linear(64, 32, bias=False), group_size=64, bits=4)
    assert fuse_projections(groups) == 0
    bias = _parent("linear")
    bias.v_proj = nn.Linear(48, 32, bias=True)
    assert fuse_projections(bias) == 0
    dtypes = _parent("linear")
    dtypes.k_proj.set_dtype(mx.float16)
    assert fuse_projections(dtypes) == 0

    class Special(nn.Linear):
        pass

    special = _parent("linear")
    special.q_proj = Special(48, 64)
    assert fuse_projections(special) == 0 and type(special.q_proj) is Special

    shared_kv = _parent("linear")  # gemma3n's KV-shared layers call q_proj alone
    shared_kv.is_kv_shared_layer = True
    assert fuse_projections(shared_kv) == 0 and type(shared_kv.q_proj) is nn.Linear
