"""`/v1/completions` with echo + logprobs scores the prompt's own tokens, as OpenAI's legacy API does.

The numbers are checked against a forward pass of the same model in this
process (the tiny llama the test server runs), through a real server and the
openai client; steering by a preset must change them exactly as the same
intervention applied in-process does.
"""

import numpy as np
import openai
import pytest
from conftest import API_KEY
from gateway_helpers import validate

pytestmark = pytest.mark.server

PROMPT = [5, 17, 3, 42, 8, 99, 23, 4, 61, 7]  # token ids: no tokenizer round trip between here and the server
TOP = 3


def _reference(lm, tokens, interventions=()):
    """(logprob of each token after the first, top-TOP ids per position) from one plain forward pass."""
    import mlx.core as mx
    from mlx_interp.steering.capture import ResidualHook
    from mlx_interp.steering.hooks import layer_hooks
    from mlx_interp.steering.interventions import Phase, RowSteering

    hook = ResidualHook()
    hook.steering = RowSteering.build([tuple(interventions)], Phase.PROMPT)
    with layer_hooks(lm.model, hook):
        logits = lm.model(mx.array([tokens]))[0].astype(mx.float32)
    lp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    own = lp[np.arange(len(tokens) - 1), tokens[1:]]
    top = np.argsort(-lp[:-1], axis=-1)[:, :TOP]
    return own, top, lp


def _text(lm, t):
    return lm.tokenizer.decode([t])


@pytest.fixture()
def oai(tiny_server):
    return openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=API_KEY, max_retries=0)


def _check_against(lm, lp_obj, tokens, interventions=()):
    own, top, full = _reference(lm, tokens, interventions)
    n = len(tokens)
    assert lp_obj["tokens"][:n] == [_text(lm, t) for t in tokens]
    assert lp_obj["token_logprobs"][0] is None and lp_obj["top_logprobs"][0] is None
    np.testing.assert_allclose(lp_obj["token_logprobs"][1:n], own, rtol=1e-4, atol=1e-4)
    for pos in range(1, n):
        got = lp_obj["top_logprobs"][pos]
        assert len(got) <= TOP
        want = {_text(lm, int(t)): float(full[pos - 1, t]) for t in top[pos - 1]}
        assert set(got) == set(want), (pos, got, want)
        for k, v in got.items():
            assert v == pytest.approx(want[k], abs=1e-4)
    offsets = lp_obj["text_offset"][:n]
    assert offsets[0] == 0 and all(b - a == len(_text(lm, t)) for a, b, t in zip(offsets, offsets[1:], tokens))


def test_echo_logprobs_match_an_in_process_forward_pass(oai, tiny_llama):
    r = oai.completions.create(model="default", prompt=PROMPT, max_tokens=2, temperature=0, echo=True, logprobs=TOP)
    data = r.model_dump(exclude_unset=True)  # what the server sent, as the openai client parsed it
    validate(data, "CreateCompletionResponse", echoed_prompt=True)
    lp = data["choices"][0]["logprobs"]
    n = len(PROMPT)
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == n + data["usage"]["completion_tokens"]
    _check_against(tiny_llama, lp, PROMPT)
    # the generated tokens follow, their offsets counted from the end of the echoed prompt
    prefix = tiny_llama.tokenizer.decode(PROMPT)
    assert data["choices"][0]["text"].startswith(prefix) and lp["text_offset"][n] == len(prefix)
    assert all(isinstance(x, float) for x in lp["token_logprobs"][n:])


def test_scoring_only_with_max_tokens_zero_and_no_prompt_cache_leak(oai, tiny_llama):
    """max_tokens 0 scores the prompt alone; a second identical request (prompt cache warm) scores the same."""
    first = oai.completions.create(model="default", prompt=PROMPT, max_tokens=0, echo=True, logprobs=TOP).model_dump(exclude_unset=True)
    validate(first, "CreateCompletionResponse", echoed_prompt=True)
    assert first["usage"]["completion_tokens"] == 0
    assert len(first["choices"][0]["logprobs"]["token_logprobs"]) == len(PROMPT)
    _check_against(tiny_llama, first["choices"][0]["logprobs"], PROMPT)
    oai.completions.create(model="default", prompt=PROMPT + [11], max_tokens=1, temperature=0)  # warms the prompt cache
    again = oai.completions.create(model="default", prompt=PROMPT, max_tokens=0, echo=True, logprobs=TOP).model_dump(exclude_unset=True)
    assert again["choices"][0]["logprobs"] == first["choices"][0]["logprobs"]


def test_logprobs_zero_scores_tokens_without_alternatives(oai, tiny_llama):
    data = oai.completions.create(model="default", prompt=PROMPT, max_tokens=0, echo=True, logprobs=0).model_dump(exclude_unset=True)
    lp = data["choices"][0]["logprobs"]
    own, _, _ = _reference(tiny_llama, PROMPT)
    assert lp["token_logprobs"][0] is None
    np.testing.assert_allclose(lp["token_logprobs"][1:], own, rtol=1e-4, atol=1e-4)
    assert not lp["top_logprobs"]


def test_steered_preset_scores_the_prompt_under_its_steering(oai, tiny_llama, tiny_artifacts):
    from mlx_interp.steering.vectors import SteeringVector

    plain = oai.completions.create(model="default", prompt=PROMPT, max_tokens=0, echo=True, logprobs=TOP).model_dump(exclude_unset=True)
    steered = oai.completions.create(model="pushed", prompt=PROMPT, max_tokens=0, echo=True, logprobs=TOP).model_dump(exclude_unset=True)
    applied = steered["steering"]["applied"]
    assert [a["vector"] for a in applied] == ["push"]
    vector = SteeringVector.load(tiny_artifacts["vectors"] / "push.json")
    iv = vector.intervention(alpha=applied[0]["alpha"], layers=applied[0]["layers"])
    _check_against(tiny_llama, steered["choices"][0]["logprobs"], PROMPT, [iv])
    diff = np.abs(np.array(steered["choices"][0]["logprobs"]["token_logprobs"][1:]) - plain["choices"][0]["logprobs"]["token_logprobs"][1:])
    assert diff.max() > 1e-2  # the steer reached the scores


def test_streamed_echo_carries_the_prompt_scores_first(oai, tiny_llama):
    body = {"model": "default", "prompt": PROMPT, "max_tokens": 3, "temperature": 0, "echo": True, "logprobs": TOP}
    whole = oai.completions.create(**body).model_dump(exclude_unset=True)
    chunks = [c.model_dump(exclude_unset=True) for c in oai.completions.create(**body, stream=True)]
    for c in chunks:
        validate(c, "CreateCompletionResponse", streamed_completion=True, echoed_prompt=True)
    first = chunks[0]["choices"][0]
    assert first["text"] == whole["choices"][0]["text"][: len(first["text"])]
    _check_against(tiny_llama, first["logprobs"], PROMPT)
    streamed = [x for c in chunks for ch in c["choices"] if ch["logprobs"] for x in ch["logprobs"]["token_logprobs"]]
    assert streamed == whole["choices"][0]["logprobs"]["token_logprobs"]
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == whole["choices"][0]["text"]
