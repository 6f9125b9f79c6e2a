"""The study decoder: batched by prompt length, exactly what the library's generate computes."""

import numpy as np

from mlx_interp.experiments.decoding import greedy_decode
from mlx_interp.steering.generation import generate
from mlx_interp.steering.interventions import Intervention


def _prompts(lm):
    texts = ["one two three four", "five six seven eight", "red green", "nine ten eleven twelve thirteen"]
    return [lm.tokenizer.encode(t) for t in texts]


def test_matches_library_generate_with_per_row_steering(tiny_llama):
    lm = tiny_llama
    prompts = _prompts(lm)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    ivs = [(), (Intervention("v", v, alpha=4.0, layers=(1,)),), (Intervention("v", v, op="reflect", layers=(0, 1)),), ()]
    ours = greedy_decode(lm, prompts, ivs, max_tokens=5, batch_rows=2, share_prefix=False)
    ref = generate(lm, prompts, ivs, max_tokens=5, temperature=0.0, chat=False)
    assert [o.tokens for o in ours] == [r.tokens for r in ref]
    assert all(np.isclose(np.exp(o.first_logprobs).sum(), 1.0, atol=1e-4) for o in ours)


def test_shared_prefix_changes_nothing_without_steering(tiny_llama):
    lm = tiny_llama
    head = lm.tokenizer.encode("a shared opening of several tokens")
    prompts = [head + p for p in _prompts(lm)]
    shared = greedy_decode(lm, prompts, [()] * len(prompts), max_tokens=4, share_prefix=True)
    alone = greedy_decode(lm, prompts, [()] * len(prompts), max_tokens=4, share_prefix=False)
    assert [o.tokens for o in shared] == [o.tokens for o in alone]
    for s, a in zip(shared, alone):
        assert np.allclose(s.first_logprobs, a.first_logprobs, atol=1e-4)


def test_shared_prefix_is_steered_like_each_row(tiny_llama):
    """The opening every prompt shares is computed under each row's own steering, as the server does."""
    lm = tiny_llama
    head = lm.tokenizer.encode("a shared opening of several tokens")
    prompts = [head + p for p in _prompts(lm)]
    rng = np.random.default_rng(1)
    v = rng.standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    add = Intervention("v", v, alpha=6.0, layers=(0, 1))
    ivs = [(add,), (Intervention("v", v, op="reflect", alpha=3.0, layers=(0, 1)),), (), (add,)]
    same_length = [head + prompts[0][len(head):]] * 4  # one batch whose rows have different openings
    for batch in (prompts, same_length):
        shared = greedy_decode(lm, batch, ivs, max_tokens=5, batch_rows=3, share_prefix=True)
        alone = greedy_decode(lm, batch, ivs, max_tokens=5, share_prefix=False)
        ref = generate(lm, batch, ivs, max_tokens=5, temperature=0.0, chat=False)
        assert [o.tokens for o in shared] == [o.tokens for o in alone] == [r.tokens for r in ref]
        for s, a in zip(shared, alone):
            assert np.allclose(s.first_logprobs, a.first_logprobs, atol=1e-4)
    assert not np.allclose(shared[0].first_logprobs, shared[2].first_logprobs, atol=1e-2)  # the steering shows


def test_rows_that_steer_alike_share_one_opening(tiny_llama, monkeypatch):
    """Equal steerings built as separate objects (as a study builds them) compute the shared opening once."""
    from mlx_interp.experiments import decoding

    lm = tiny_llama
    head = lm.tokenizer.encode("a shared opening of several tokens")
    prompts = [head + p for p in _prompts(lm)]
    v = np.random.default_rng(2).standard_normal((lm.num_layers, lm.hidden_size)).astype(np.float32)
    ivs = [(Intervention("v", v.copy(), alpha=2.0),) for _ in prompts]  # four objects, one steering
    ivs[-1] = (Intervention("v", v * 2, alpha=2.0),)  # same name, other direction: its own opening
    calls = []
    real = decoding.steering_identity
    monkeypatch.setattr(decoding, "steering_identity", lambda x: calls.append(real(x)) or real(x))
    out = greedy_decode(lm, prompts, ivs, max_tokens=3, share_prefix=True)
    assert len(set(calls)) == 2
    alone = greedy_decode(lm, prompts, ivs, max_tokens=3, share_prefix=False)
    assert [o.tokens for o in out] == [o.tokens for o in alone]
