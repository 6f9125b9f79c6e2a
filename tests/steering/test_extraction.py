"""Vectors from contrastive pairs: reading pairs, the statistics on known inputs, building on tiny models."""

import json

import numpy as np
import pytest

from mlx_interp.steering.artifacts import dataset_hash
from mlx_interp.steering.extraction import (
    build_vector,
    eligible_layers,
    heldout_separation,
    read_pairs,
    recommend_layers,
    vector_from_states,
)
from mlx_interp.steering.interventions import Phase, RowSteering
from mlx_interp.steering.vectors import SteeringVector

PAIRS = [
    {"positive": "I adore the colour red.", "negative": "I adore the colour blue."},
    {"positive": "Paint it red.", "negative": "Paint it blue."},
    {"positive": "A red car drove by.", "negative": "A blue car drove by."},
    {"positive": "Her red dress.", "negative": "Her blue dress."},
]


# -- reading pairs ---------------------------------------------------------------


def test_read_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"positive": "a", "negative": "b", "group": "g1"}\n\n{"positive": "c", "negative": "d", "chat": false}\n')
    assert read_pairs(path) == [{"positive": "a", "negative": "b", "group": "g1"}, {"positive": "c", "negative": "d", "chat": False}]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "invalid JSON"),
        ('["a", "b"]', "JSON object"),
        ('{"positive": "a"}', "'negative' must be a non-empty string"),
        ('{"positive": "", "negative": "b"}', "'positive' must be a non-empty string"),
        ('{"positive": "a", "negative": "b", "label": 1}', "unknown field"),
        ('{"positive": "a", "negative": "b", "chat": "yes"}', "'chat' must be true or false"),
        ('{"positive": NaN, "negative": "b"}', "invalid JSON"),
    ],
)
def test_read_pairs_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"positive": "ok", "negative": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message) as err:
        read_pairs(path)
    assert str(err.value).startswith(f"{path}:2:")


def test_read_pairs_empty_and_missing(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ValueError, match="no pairs"):
        read_pairs(path)
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        read_pairs(tmp_path / "absent.jsonl")


# -- statistics on constructed states -------------------------------------------------


def synthetic_states(n=12, L=10, D=16, signal_layers=(4, 5), seed=0):
    """Positive = negative + a fixed direction (plus noise) at signal layers; noise elsewhere."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, L, D)) * 3 + 5
    direction = np.zeros((L, D))
    for l in signal_layers:
        direction[l, l] = 4.0
    noise = rng.normal(size=(n, L, D)) * 0.3
    pos = base + direction / 2 + noise
    neg = base - direction / 2 - rng.normal(size=(n, L, D)) * 0.3
    return pos.astype(np.float32), neg.astype(np.float32), direction


def test_mean_diff_recovers_the_direction():
    pos, neg, direction = synthetic_states()
    vector = vector_from_states(pos, neg, "syn")
    np.testing.assert_allclose(vector.directions[4], direction[4], atol=0.5)  # noise s.e. about 0.12
    assert vector.directions.dtype == np.float32 and vector.directions.shape == (10, 16)


def test_pca_is_sign_aligned_and_in_mean_difference_units():
    pos, neg, direction = synthetic_states()
    mean = vector_from_states(pos, neg, "m").directions
    pca = vector_from_states(pos, neg, "p", method="pca").directions
    for layer in (4, 5):
        unit = pca[layer] / np.linalg.norm(pca[layer])
        assert unit @ direction[layer] > 0.95 * 4.0  # points toward positive
        # its length is the mean difference's projection on it
        assert np.linalg.norm(pca[layer]) == pytest.approx(mean[layer] @ unit, rel=1e-4)


def test_separation_finds_signal_layers_and_band_is_contiguous():
    pos, neg, _ = synthetic_states(L=20, signal_layers=(8, 9, 10))
    effect, accuracy = heldout_separation(pos, neg)
    assert effect[8:11].min() > 5 * np.abs(np.delete(effect, [8, 9, 10])).max()
    assert np.all(accuracy[8:11] == 1.0)
    layers = recommend_layers(effect)
    assert set(layers) <= {8, 9, 10} and layers == tuple(range(layers[0], layers[-1] + 1))


def test_recommendation_avoids_the_ends():
    scores = np.zeros(30)
    scores[0] = scores[29] = 100.0  # strongest at the very ends
    scores[14] = 5.0
    assert recommend_layers(scores) == (14,)
    for L in (1, 2, 3, 4, 10, 30, 80):
        allowed = eligible_layers(L)
        assert len(allowed) >= 1
        if L >= 10:
            assert allowed.start >= L // 10 and allowed.stop <= L - L // 10


def test_midpoints_make_reflect_swap_the_two_sides():
    import mlx.core as mx

    pos, neg, _ = synthetic_states()
    vector = vector_from_states(pos, neg, "syn")
    layer = 4
    unit = vector.directions[layer] / np.linalg.norm(vector.directions[layer])
    mean_pos, mean_neg = pos.mean(axis=0)[layer], neg.mean(axis=0)[layer]
    steering = RowSteering.build([[vector.intervention(op="reflect", layers=[layer])]], Phase.PROMPT)
    reflected = np.array(steering.apply(layer, mx.array(mean_pos[None, None, :])))[0, 0]
    assert reflected @ unit == pytest.approx(mean_neg @ unit, abs=1e-3)


def test_metadata_records_norms_and_scores():
    pos, neg, _ = synthetic_states()
    vector = vector_from_states(pos, neg, "syn", dataset_hash="h")
    expected_norms = np.linalg.norm(np.concatenate([pos, neg]), axis=2).mean(axis=0)
    np.testing.assert_allclose(vector.metadata["layer_norms"], expected_norms, rtol=1e-5)
    extra = vector.metadata["extra"]
    assert len(extra["separation"]) == len(extra["heldout_sign_accuracy"]) == len(extra["cohens_d"]) == 10
    assert vector.default_alpha > 0 and vector.metadata["dataset_hash"] == "h"
    json.dumps(vector.metadata, allow_nan=False)


# -- building on tiny models -------------------------------------------------------------


def test_build_vector_on_every_family(tiny_lm, tmp_path):
    vector = build_vector(tiny_lm, PAIRS, "red_blue", description="red vs blue")
    assert vector.directions.shape == (tiny_lm.num_layers, tiny_lm.hidden_size)
    assert np.all(np.isfinite(vector.directions)) and np.any(vector.directions)
    meta = vector.metadata
    assert meta["model_id"] == tiny_lm.model_id and meta["model_fingerprint"] == tiny_lm.fingerprint
    assert meta["method"] == "mean_diff" and meta["description"] == "red vs blue"
    assert set(vector.recommended_layers) <= set(eligible_layers(tiny_lm.num_layers))
    assert vector.midpoints.shape == (tiny_lm.num_layers,)
    loaded = SteeringVector.load(
        vector.save(tmp_path), fingerprint=tiny_lm.fingerprint, hidden_size=tiny_lm.hidden_size, num_layers=tiny_lm.num_layers
    )
    assert loaded.sha256 == vector.sha256


def test_build_vector_matches_captured_difference(tiny_llama):
    from mlx_interp.steering.capture import capture_hidden_states

    vector = build_vector(tiny_llama, PAIRS, "v", chat=False, position="mean")
    pos = capture_hidden_states(tiny_llama, [p["positive"] for p in PAIRS], position="mean")
    neg = capture_hidden_states(tiny_llama, [p["negative"] for p in PAIRS], position="mean")
    np.testing.assert_allclose(vector.directions, (pos - neg).mean(axis=0), rtol=1e-4, atol=1e-5)


def test_per_pair_chat_flag_overrides_the_argument(tiny_llama):
    from mlx_interp.steering.capture import capture_hidden_states

    pairs = [dict(p, chat=True) for p in PAIRS[:2]] + PAIRS[2:]
    vector = build_vector(tiny_llama, pairs, "v", chat=False)
    chat_pos = capture_hidden_states(tiny_llama, [p["positive"] for p in PAIRS[:2]], chat=True)
    chat_neg = capture_hidden_states(tiny_llama, [p["negative"] for p in PAIRS[:2]], chat=True)
    raw_pos = capture_hidden_states(tiny_llama, [p["positive"] for p in PAIRS[2:]], chat=False)
    raw_neg = capture_hidden_states(tiny_llama, [p["negative"] for p in PAIRS[2:]], chat=False)
    expected = np.concatenate([chat_pos - chat_neg, raw_pos - raw_neg]).mean(axis=0)
    np.testing.assert_allclose(vector.directions, expected, rtol=1e-4, atol=1e-5)


def test_build_vector_dataset_hash(tiny_llama, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    from_file = build_vector(tiny_llama, read_pairs(path), "v", dataset_paths=[path])
    assert from_file.metadata["dataset_hash"] == dataset_hash([path])
    in_memory = build_vector(tiny_llama, PAIRS, "v")
    other = build_vector(tiny_llama, PAIRS[:3], "v")
    assert in_memory.metadata["dataset_hash"] != other.metadata["dataset_hash"]


def test_build_vector_refusals(tiny_llama):
    with pytest.raises(ValueError, match="at least 2 pairs"):
        build_vector(tiny_llama, PAIRS[:1], "v")
    with pytest.raises(ValueError, match="method"):
        build_vector(tiny_llama, PAIRS, "v", method="lda")
    with pytest.raises(ValueError, match="position"):
        build_vector(tiny_llama, PAIRS, "v", position="all")
    with pytest.raises(ValueError, match="not allowed"):
        build_vector(tiny_llama, PAIRS, "../v")


# -- the real default model -------------------------------------------------------------------

TOPICS = ("a house", "a car", "a flower", "a shirt", "the sky", "a bird", "a painting", "a dress")


@pytest.mark.integration
def test_default_model_vector_separates_and_steers(default_lm):
    # the colour word is the last token, where the pair is read (as the shipped green_red is built)
    pairs = [{"positive": f"Describe {t} that is bright red", "negative": f"Describe {t} that is bright blue"} for t in TOPICS]
    vector = build_vector(default_lm, pairs, "red_blue", chat=False)
    extra = vector.metadata["extra"]
    band = vector.recommended_layers
    # the colour is clearly decodable in the chosen band, on held-out pairs
    assert min(extra["heldout_sign_accuracy"][l] for l in band) >= 7 / 8
    assert max(extra["separation"][l] for l in band) > 2.0
    assert set(band) <= set(eligible_layers(default_lm.num_layers))
    # meaning, not just "the tokens differ": asked for the sky's colour, the next-token distribution
    # moves toward " red" and away from " blue" with alpha > 0, and the other way with alpha < 0
    from mlx_interp.experiments.decoding import chat_tokens, greedy_decode

    tok = default_lm.tokenizer
    prompt = chat_tokens(default_lm, "What colour is the clear daytime sky? Answer with one word.", "Answer with one word.")
    prompt += tok.encode("The answer is", add_special_tokens=False)
    red, blue = (tok.encode(w, add_special_tokens=False)[0] for w in (" red", " blue"))
    runs = greedy_decode(default_lm, [prompt] * 3, [[], [vector.intervention(1.5)], [vector.intervention(-1.5)]],
                         max_tokens=3, share_prefix=False)
    margin = [float(r.first_logprobs[red] - r.first_logprobs[blue]) for r in runs]
    print("log p(red) - log p(blue): unsteered, +1.5, -1.5:", np.round(margin, 2), [r.text for r in runs])
    assert margin[1] > margin[0] + MEANING_NATS, margin
    assert margin[2] < margin[0] - MEANING_NATS, margin
    assert "blue" in runs[0].text.lower()  # the unsteered model knows the sky


# Measured: margin -0.50 unsteered, +6.55 at alpha 1.5, -5.82 at -1.5 (a vector read at a chat template's
# assistant cue instead of the colour word moved it by 0.1-0.15 only). A direction that does not carry
# red vs blue cannot pass this.
MEANING_NATS = 3.0
