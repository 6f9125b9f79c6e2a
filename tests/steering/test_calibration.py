"""Calibration on a tiny model: coherence is the steered text's log-probability under the unsteered model."""

import json

import numpy as np
import pytest

from mlx_interp.cli import main
from mlx_interp.steering.calibration import (
    SweepPoint,
    apply_calibration,
    calibrate,
    coherent_span,
    continuation_logprobs,
)
from mlx_interp.steering.capture import capture_hidden_states, encode
from mlx_interp.steering.extraction import vector_from_states
from mlx_interp.steering.vectors import SteeringVector

PROMPTS = ("hello there", "tell me a story")


@pytest.fixture(scope="module")
def vector(tiny_llama):
    pos = capture_hidden_states(tiny_llama, ["the red apple", "a red car", "red paint"])
    neg = capture_hidden_states(tiny_llama, ["the blue apple", "a blue car", "blue paint"])
    return vector_from_states(pos, neg, "red_blue", model_fingerprint=tiny_llama.fingerprint)


def test_continuation_logprobs_are_the_models_own(tiny_llama):
    import mlx.core as mx

    ids = encode(tiny_llama, "hello", chat=True)
    logits = tiny_llama.model(mx.array([ids]))[0, -1].astype(mx.float32)
    greedy = int(mx.argmax(logits))
    token_lp, first = continuation_logprobs(tiny_llama, ids, [greedy])
    assert token_lp[0] == pytest.approx(float(first.max()), abs=1e-5)  # the greedy token is the most likely one
    assert np.exp(first).sum() == pytest.approx(1.0, abs=1e-4)


def _point(alpha, coherent):
    return SweepPoint(alpha, 0.0, 0.0, 0.0, coherent, "")


def test_coherent_means_above_the_floor_or_close_to_the_unsteered_text():
    from mlx_interp.steering.calibration import COHERENT_LOGPROB, MAX_LOGPROB_DROP, is_coherent

    assert is_coherent(COHERENT_LOGPROB + 0.1, 10.0)  # far from a parroting baseline, still fluent
    assert is_coherent(-9.0, MAX_LOGPROB_DROP - 0.1)  # a baseline that is itself improbable
    assert not is_coherent(COHERENT_LOGPROB - 0.1, MAX_LOGPROB_DROP + 0.1)


def test_the_coherent_span_is_contiguous_from_zero():
    points = [_point(a, c) for a, c in [(-3, True), (-2, False), (-1, True), (1, True), (2, True), (3, False), (4, True)]]
    assert coherent_span(points) == (-1, 2)
    assert coherent_span([_point(1, False), _point(-1, False)]) == (0.0, 0.0)


def test_a_huge_push_is_incoherent_and_a_tiny_one_is_not(tiny_llama, vector):
    result = calibrate(tiny_llama, vector, alphas=(-40.0, -0.01, 0.01, 40.0), prompts=PROMPTS, max_tokens=6)
    by_alpha = {p.alpha: p for p in result.sweep}
    assert by_alpha[0.01].logprob_drop < 0.5 and by_alpha[0.01].coherent
    assert by_alpha[40.0].logprob_drop > result.max_logprob_drop and not by_alpha[40.0].coherent
    assert by_alpha[40.0].kl_first_token > by_alpha[0.01].kl_first_token
    assert result.coherent_range == (-0.01, 0.01)
    assert result.recommended_alpha == 0.01


def test_calibration_is_stored_and_shown(tiny_llama, vector, tmp_path):
    assert vector.describe()["calibrated"] is False and vector.coherent_range is None
    result = calibrate(tiny_llama, vector, alphas=(0.01, 40.0), prompts=PROMPTS[:1], max_tokens=4)
    calibrated = apply_calibration(vector, result, tiny_llama.fingerprint)
    calibrated.save(tmp_path)
    back = SteeringVector.load(tmp_path / "red_blue.json")
    described = back.describe()
    assert described["calibrated"] is True
    assert described["coherent_range"] == [0.0, 0.01]
    assert described["recommended_alpha"] == back.default_alpha == 0.01
    assert [p["alpha"] for p in back.metadata["calibration"]["sweep"]] == [0.01, 40.0]


def test_calibrate_command_rewrites_the_vector(tiny_model_dirs, tiny_llama, vector, tmp_path, capsys):
    vector.save(tmp_path)
    path = tmp_path / "red_blue.json"
    rc = main(["vectors", "calibrate", str(path), "--model", str(tiny_model_dirs["llama"]), "--alphas", "0.01,40",
               "--max-tokens", "4"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "coherent range [0, 0.01]" in out
    meta = json.loads(path.read_text())
    assert meta["calibrated"] is True and meta["calibration"]["recommended_alpha"] == 0.01
