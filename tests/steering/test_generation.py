"""DecodeBatch and generate(): scopes, per-row steering in one batch, rows joining and leaving."""

import numpy as np
import pytest

from mlx_interp.steering.generation import generate, steering_session
from mlx_interp.steering.hooks import hooks_installed
from mlx_interp.steering.interventions import Intervention, Op, Scope

PROMPT_A = [5, 40, 41, 42, 43, 44, 45, 46, 47, 12]
PROMPT_B = [7, 8, 9]
PROMPT_C = [100, 101, 102, 103, 104, 105]
FORCED = [33, 34, 35, 36, 37, 38]  # decode inputs fed to every row, so runs are comparable token by token
STEPS = 5
TOL = 1e-4  # batched vs alone: same math, different reduction shapes


def _strong(lm, scope=Scope.ALL, alpha=4.0):
    rng = np.random.default_rng(7)
    d = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return Intervention("strong", d, Op.ADD, alpha=alpha, scope=scope)


def _alone(lm, prompt, ivs=(), steps=STEPS, capture=False):
    """[prefill logits, step 1 logits, ...] (and hidden states) of one row decoded by itself."""
    logits, hidden = [], []
    with steering_session(lm, capture_layers=None if capture else ()) as batch:
        pre = batch.prefill(prompt, ivs)
        batch.add("x", pre, ivs)
        logits.append(np.array(pre.logits))
        for t in FORCED[:steps]:
            lg, h = batch.step([t], capture=capture)
            logits.append(np.array(lg[0]))
            hidden.append(None if h is None else np.array(h[0]))
    return (logits, hidden) if capture else logits


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL * max(1.0, float(np.abs(b).max())))


def _differs(a, b):
    return float(np.abs(a - b).max()) > 1e-3


# -- scopes -------------------------------------------------------------------------


def test_scope_all_changes_prompt_and_decode(tiny_lm):
    plain = _alone(tiny_lm, PROMPT_A)
    steered = _alone(tiny_lm, PROMPT_A, [_strong(tiny_lm, Scope.ALL)])
    assert all(_differs(s, p) for s, p in zip(steered, plain))


def test_scope_prompt_changes_the_prefill_but_not_decode_steps(tiny_lm):
    plain = _alone(tiny_lm, PROMPT_A)
    prompt_only = [_strong(tiny_lm, Scope.PROMPT)]
    steered = _alone(tiny_lm, PROMPT_A, prompt_only)
    assert _differs(steered[0], plain[0])
    # The decode steps see the steered prompt's cache but are not steered themselves:
    # identical to a row prefilled with steering whose decode carries no intervention.
    with steering_session(tiny_lm, capture_layers=()) as batch:
        pre = batch.prefill(PROMPT_A, prompt_only)
        batch.add("x", pre, ())
        for i, t in enumerate(FORCED[:STEPS]):
            lg, _ = batch.step([t])
            np.testing.assert_array_equal(np.array(lg[0]), steered[i + 1])
    # ... and different from a row steered during decoding too.
    all_scope = _alone(tiny_lm, PROMPT_A, [_strong(tiny_lm, Scope.ALL)])
    assert _differs(all_scope[1], steered[1])


def test_scope_generation_leaves_the_prefill_alone(tiny_lm):
    plain = _alone(tiny_lm, PROMPT_A)
    steered = _alone(tiny_lm, PROMPT_A, [_strong(tiny_lm, Scope.GENERATION)])
    np.testing.assert_array_equal(steered[0], plain[0])
    assert all(_differs(s, p) for s, p in zip(steered[1:], plain[1:]))


# -- per-row batching -------------------------------------------------------------------


def test_unsteered_row_in_a_steered_batch_equals_it_alone(tiny_lm):
    strong = [_strong(tiny_lm)]
    b_alone, b_hidden = _alone(tiny_lm, PROMPT_B, capture=True)
    a_alone = _alone(tiny_lm, PROMPT_A, strong)
    with steering_session(tiny_lm) as batch:
        pre_a = batch.prefill(PROMPT_A, strong)
        batch.add("A", pre_a, strong)
        pre_b = batch.prefill(PROMPT_B)
        batch.add("B", pre_b)
        _close(np.array(pre_b.logits), b_alone[0])
        for i, t in enumerate(FORCED[:STEPS]):
            lg, hidden = batch.step([t, t])
            assert hidden.shape == (2, tiny_lm.num_layers, tiny_lm.hidden_size)
            _close(np.array(lg[1]), b_alone[i + 1])
            _close(np.array(hidden[1]), b_hidden[i])
            _close(np.array(lg[0]), a_alone[i + 1])  # and the steered row is steered as if alone
            assert _differs(np.array(lg[0]), np.array(lg[1]))


def test_rows_joining_and_leaving_keep_the_others_correct(tiny_llama):
    lm = tiny_llama
    ivs = {"A": [_strong(lm)], "B": [], "C": [_strong(lm, alpha=-3.0)]}
    prompts = {"A": PROMPT_A, "B": PROMPT_B, "C": PROMPT_C}
    steps = len(FORCED)
    alone = {k: _alone(lm, prompts[k], ivs[k], steps=steps) for k in ivs}
    fed = {k: 0 for k in ivs}  # decode steps each row has taken
    with steering_session(lm, capture_layers=()) as batch:
        for k in ("A", "B"):
            batch.add(k, batch.prefill(prompts[k], ivs[k]), ivs[k])

        def step():
            tokens = [FORCED[fed[k]] for k in batch.uids]
            lg, _ = batch.step(tokens)
            for row, k in enumerate(batch.uids):
                fed[k] += 1
                _close(np.array(lg[row]), alone[k][fed[k]])

        step()
        step()
        pre_c = batch.prefill(prompts["C"], ivs["C"])  # prefilled while A and B wait mid-decode
        _close(np.array(pre_c.logits), alone["C"][0])
        batch.add("C", pre_c, ivs["C"])
        assert batch.uids == ["A", "B", "C"]
        step()
        batch.remove(["A"])
        assert batch.uids == ["B", "C"] and len(batch) == 2
        step()
        step()
        batch.remove(["B"])
        step()
        batch.remove(["C", "not-a-row"])
        assert len(batch) == 0 and batch.cache is None
        batch.add("B2", batch.prefill(prompts["B"]), ())  # an emptied batch takes new rows
        lg, _ = batch.step([FORCED[0]])
        _close(np.array(lg[0]), alone["B"][1])
    assert not hooks_installed(lm.model)


def test_step_validates_the_token_count(tiny_llama):
    with steering_session(tiny_llama) as batch:
        batch.add(0, batch.prefill(PROMPT_B))
        with pytest.raises(ValueError, match="2 tokens for 1 rows"):
            batch.step([1, 2])
        with pytest.raises(ValueError, match="empty prompt"):
            batch.prefill([])


def test_prefill_capture(tiny_lm):
    with steering_session(tiny_lm) as batch:
        pre = batch.prefill(PROMPT_A, capture_all=True)
        assert pre.hidden_last.shape == (tiny_lm.num_layers, tiny_lm.hidden_size)
        assert pre.hidden_all.shape == (len(PROMPT_A), tiny_lm.num_layers, tiny_lm.hidden_size)
        np.testing.assert_array_equal(np.array(pre.hidden_all[-1]), np.array(pre.hidden_last))
        after = batch.prefill(PROMPT_B)  # capture_all does not stick to later prompts
        assert after.hidden_all is None and after.hidden_last.shape == (tiny_lm.num_layers, tiny_lm.hidden_size)
    with steering_session(tiny_lm, capture_layers=[0, 2]) as batch:
        pre = batch.prefill(PROMPT_A)
        assert pre.hidden_last.shape == (2, tiny_lm.hidden_size)


def test_prefill_reuses_a_cached_prefix(tiny_llama):
    from mlx_lm.models.cache import make_prompt_cache

    full = _alone(tiny_llama, PROMPT_A, steps=0)[0]
    with steering_session(tiny_llama) as batch:
        cache = make_prompt_cache(tiny_llama.model)
        batch.prefill(PROMPT_A[:6], cache=cache)
        pre = batch.prefill(PROMPT_A, cache=cache, cached_tokens=6)
        _close(np.array(pre.logits), full)
        cache = make_prompt_cache(tiny_llama.model)
        batch.prefill(PROMPT_A, cache=cache)
        again = batch.prefill(PROMPT_A, cache=cache, cached_tokens=len(PROMPT_A))  # all cached
        _close(np.array(again.logits), full)


def test_long_prompt_is_prefilled_in_chunks(tiny_llama, monkeypatch):
    import mlx_interp.steering.generation as generation

    prompt = (PROMPT_A * 4)[:37]
    whole = _alone(tiny_llama, prompt, steps=2, capture=True)
    monkeypatch.setattr(generation, "PREFILL_CHUNK", 8)
    chunked = _alone(tiny_llama, prompt, steps=2, capture=True)
    for a, b in zip(chunked[0], whole[0]):
        _close(a, b)


# -- generate() ------------------------------------------------------------------------


def test_generate_per_row_interventions_match_single_runs(tiny_lm):
    strong = [_strong(tiny_lm, alpha=60.0)]  # large against gemma's sqrt(hidden)-scaled residual
    prompts = ["hello there", "the sky is", "one two three four"]
    batched = generate(tiny_lm, prompts, [strong, [], strong], max_tokens=6, chat=True)
    assert len(batched) == 3
    for prompt, ivs, got in zip(prompts, [strong, [], strong], batched):
        (alone,) = generate(tiny_lm, [prompt], [ivs], max_tokens=6, chat=True)
        assert got.tokens == alone.tokens
        assert got.text == alone.text
        assert got.finish_reason in ("stop", "length")
        assert len(got.tokens) <= 6
        assert got.finish_reason == "stop" or len(got.tokens) == 6
    plain = generate(tiny_lm, [prompts[0]], max_tokens=6, chat=True)[0]
    assert plain.tokens != batched[0].tokens  # the steering changed what was generated


def test_generate_stops_at_eos(tiny_llama, monkeypatch):
    """Force EOS as the argmax at once: an empty completion with finish_reason 'stop'."""
    eos = sorted(tiny_llama.tokenizer.eos_token_ids)[0]
    d = np.zeros((tiny_llama.num_layers, tiny_llama.hidden_size), np.float32)
    # Steering the last layer along the EOS row of the output matrix makes EOS win.
    w = tiny_llama.model.model.embed_tokens.weight  # tied embeddings in the tiny llama
    d[-1] = np.array(w[eos]) / np.linalg.norm(np.array(w[eos]))
    push = Intervention("eos", d, Op.ADD, alpha=500.0, layers=(tiny_llama.num_layers - 1,))
    out = generate(tiny_llama, ["hi", "hello"], [[push], []], max_tokens=4, chat=True)
    assert out[0].tokens == [] and out[0].finish_reason == "stop"
    assert out[1].finish_reason in ("stop", "length")


def test_generate_argument_checks(tiny_llama):
    with pytest.raises(ValueError, match="1 intervention lists for 2 prompts"):
        generate(tiny_llama, ["a", "b"], [[]], max_tokens=2)


# -- sliding-window caches ------------------------------------------------------------

SLIDING = {"model_type": "gemma3_text", "head_dim": 16, "sliding_window": 4, "sliding_window_pattern": 2, "query_pre_attn_scalar": 16}


@pytest.fixture(scope="module")
def tiny_sliding(tmp_path_factory):
    """A gemma3 text model whose every other layer has a 4-token window (RotatingKVCache)."""
    import tiny_models

    from mlx_interp.steering.model import load_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(tiny_models.FAMILY_CONFIGS, "gemma3_text", SLIDING)
        path = tiny_models.make_tiny_model_dir("gemma3_text", tmp_path_factory.mktemp("sliding"))
    return load_model(str(path), dtype="float32", progress=False)


def test_rows_with_rotating_caches_batch_correctly(tiny_sliding):
    from mlx_lm.models.cache import RotatingKVCache, make_prompt_cache

    assert any(isinstance(c, RotatingKVCache) for c in make_prompt_cache(tiny_sliding.model))
    steps = len(FORCED)  # longer than the window, so the rotation matters
    a_alone = _alone(tiny_sliding, PROMPT_A, steps=steps)
    b_alone = _alone(tiny_sliding, PROMPT_B, steps=steps)
    with steering_session(tiny_sliding, capture_layers=()) as batch:
        batch.add("A", batch.prefill(PROMPT_A))
        batch.add("B", batch.prefill(PROMPT_B))
        for i, t in enumerate(FORCED[:steps]):
            lg, _ = batch.step([t, t])
            _close(np.array(lg[0]), a_alone[i + 1])
            _close(np.array(lg[1]), b_alone[i + 1])


def test_a_failing_prefill_leaves_the_batch_as_it_was(tiny_llama):
    b_alone = _alone(tiny_llama, PROMPT_B, steps=1)
    wrong_width = Intervention("bad", np.ones((tiny_llama.num_layers, tiny_llama.hidden_size + 1), np.float32))
    with steering_session(tiny_llama) as batch:
        batch.add("B", batch.prefill(PROMPT_B))
        with pytest.raises(ValueError):
            batch.prefill(PROMPT_A, [wrong_width], capture_all=True)
        assert batch.hook.steering is None and batch.hook.recorder.last_only
        lg, _ = batch.step([FORCED[0]])
        _close(np.array(lg[0]), b_alone[1])
