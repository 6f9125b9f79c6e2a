"""Train on the real default model where the signal is obvious: food vs weather sentences."""

import numpy as np
import pytest

FOOD = [
    "I baked fresh bread with butter and honey for breakfast.",
    "The pasta was cooked with garlic, tomatoes and basil.",
    "She ordered grilled salmon with roasted potatoes.",
    "We ate a bowl of spicy noodle soup at lunch.",
    "He made pancakes with maple syrup and berries.",
    "The chef seasoned the steak with salt and pepper.",
    "They shared a large pizza with cheese and mushrooms.",
    "My grandmother cooks rice with beans and chicken.",
    "The salad had lettuce, cucumber and olive oil.",
    "We had chocolate cake and ice cream for dessert.",
    "He fried eggs and bacon in a hot pan.",
    "The soup tasted of carrots, onions and fresh herbs.",
]
WEATHER = [
    "Heavy rain is expected across the region tomorrow.",
    "A cold wind blew from the north all afternoon.",
    "The sky was clear and sunny with a light breeze.",
    "Snow covered the hills after the overnight storm.",
    "Thunder and lightning kept everyone awake last night.",
    "Thick fog rolled in from the coast this morning.",
    "The forecast says temperatures will drop below freezing.",
    "A warm front will bring humid air and showers.",
    "Strong gusts knocked branches onto the road.",
    "It drizzled lightly under a grey, cloudy sky.",
    "The heatwave pushed temperatures above forty degrees.",
    "Hail fell for ten minutes during the afternoon storm.",
]


@pytest.mark.integration
def test_food_vs_weather_is_found_on_the_default_model(default_lm, tmp_path):
    from mlx_interp.probes.probe import Probe
    from mlx_interp.probes.scoring import ProbeBank
    from mlx_interp.steering.capture import capture_hidden_states
    from mlx_interp.probes.training import train_probe

    texts = FOOD + WEATHER
    y = np.array([1] * len(FOOD) + [0] * len(WEATHER))
    groups = [i % len(FOOD) for i in range(len(texts))]  # pair i: one food and one weather sentence
    X = capture_hidden_states(default_lm, texts, position="last")
    assert X.shape == (24, default_lm.num_layers, default_lm.hidden_size)
    probe = train_probe(
        X, y, groups, "food", labels=("weather", "food"), model=default_lm, folds=4, n_bootstrap=300, n_shuffles=1
    )
    best = next(e for e in probe.metadata["per_layer"] if e["layer"] == probe.best_layer)
    assert best["auroc_mean"] > 0.9 and best["accuracy_mean"] > 0.8
    assert best["shuffled_auroc_mean"] < 0.8
    assert probe.metadata["model_fingerprint"] == default_lm.fingerprint

    path = probe.save(tmp_path)
    loaded = Probe.load(
        path, fingerprint=default_lm.fingerprint, hidden_size=default_lm.hidden_size, num_layers=default_lm.num_layers
    )
    import mlx.core as mx

    bank = ProbeBank([loaded], default_lm.num_layers, default_lm.hidden_size)
    fresh = capture_hidden_states(default_lm, ["We grilled corn and ate it with butter.", "It will snow all weekend."])
    scores = np.array(bank.best_scores(bank.scores(mx.array(fresh))))[:, 0]
    np.testing.assert_allclose(scores, loaded.score_numpy(fresh)[:, loaded.layers.index(loaded.best_layer)], atol=1e-4)
    assert scores[0] > scores[1]
