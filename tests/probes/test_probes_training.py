"""Training on synthetic activations whose structure is known, and reading labelled data."""

import json

import numpy as np
import pytest

from mlx_interp.probes.training import (
    auroc,
    binary_labels,
    bootstrap_ci,
    bootstrap_weights,
    cv_splits,
    group_ids,
    read_labelled,
    threshold_at_fpr,
    train_probe,
)


def planted(n=160, layers=4, dim=24, signal_layer=2, strength=3.0, seed=0):
    """Gaussian noise everywhere (drawn from seed); at one layer the positives are shifted along a fixed direction."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, layers, dim)).astype(np.float32)
    y = np.tile([0, 1], n // 2)
    direction = np.random.default_rng(1000 + dim).normal(size=dim)
    direction /= np.linalg.norm(direction)
    X[:, signal_layer, :] += (strength * y[:, None] * direction).astype(np.float32)
    groups = np.arange(n) // 2  # pairs: one negative, one positive
    return X, y, groups


@pytest.mark.parametrize("method", ["logistic", "diff_means"])
def test_planted_direction_is_found_at_its_layer(method):
    X, y, groups = planted()
    probe = train_probe(X, y, groups, "planted", method=method, folds=5, n_bootstrap=200, n_shuffles=1)
    per = {e["layer"]: e for e in probe.metadata["per_layer"]}
    assert probe.best_layer == 2
    assert per[2]["auroc_mean"] > 0.95 and per[2]["accuracy_mean"] > 0.85
    assert per[2]["auroc_ci"][0] > 0.9
    for layer in (0, 1, 3):
        assert per[layer]["auroc_mean"] < 0.75
    assert abs(per[2]["shuffled_auroc_mean"] - 0.5) < 0.15
    # the refit probe scores fresh data from the same distribution correctly
    Xf, yf, _ = planted(n=400, seed=1)
    k = probe.layers.index(2)
    assert auroc(yf, probe.score_numpy(Xf)[:, k]) > 0.95


def test_pure_noise_is_not_better_than_the_shuffled_baseline():
    rng = np.random.default_rng(3)
    n = 200
    X = rng.normal(size=(n, 2, 16)).astype(np.float32)
    y = rng.permutation(np.tile([0, 1], n // 2))
    probe = train_probe(X, y, np.arange(n), "noise", folds=5, n_bootstrap=300, n_shuffles=5)
    for e in probe.metadata["per_layer"]:
        assert abs(e["auroc_mean"] - 0.5) < 0.1
        assert e["auroc_mean"] < e["shuffled_auroc_mean"] + 0.1
        lo, hi = e["auroc_ci"]
        assert lo < 0.5 < hi


def test_cv_splits_never_split_a_group():
    rng = np.random.default_rng(0)
    raw_groups = [f"g{rng.integers(0, 30)}" for _ in range(150)]
    gid = group_ids(raw_groups)
    y = rng.integers(0, 2, size=150)
    splits = cv_splits(y, gid, folds=5, seed=1)
    assert len(splits) == 5
    tested = np.concatenate([te for _, te in splits])
    assert sorted(tested) == list(range(150))  # every example is tested exactly once
    for tr, te in splits:
        assert not set(gid[tr]) & set(gid[te])


def test_grouped_cv_does_not_reward_memorising_twins():
    """Each group is two copies of one random point with one random label: nothing generalises.

    A split that put one twin in training and the other in testing would score
    near 1 (the model memorises the point); grouped CV must stay near chance.
    """
    rng = np.random.default_rng(4)
    n_groups, dim = 60, 200
    points = rng.normal(size=(n_groups, 1, dim))
    labels = rng.permutation(np.tile([0, 1], n_groups // 2))
    X = np.repeat(points, 2, axis=0).astype(np.float32)
    y = np.repeat(labels, 2)
    groups = np.repeat(np.arange(n_groups), 2)
    probe = train_probe(X, y, groups, "twins", folds=5, n_bootstrap=0, n_shuffles=0)
    assert probe.metadata["per_layer"][0]["auroc_mean"] < 0.7
    leaky = train_probe(X, y, np.arange(len(y)), "leaky", folds=5, n_bootstrap=0, n_shuffles=0)
    assert leaky.metadata["per_layer"][0]["auroc_mean"] > 0.8  # the same data without groups leaks


def test_threshold_hits_the_requested_false_positive_rate():
    X, y, groups = planted(n=1200, layers=1, signal_layer=0, strength=1.5, dim=8, seed=5)
    probe = train_probe(X, y, groups, "fpr", fpr=0.1, n_bootstrap=0, n_shuffles=0)
    meta = probe.metadata
    assert meta["threshold_fpr"] == 0.1
    assert abs(meta["threshold_fpr_achieved"] - 0.1) < 0.01
    assert 0.1 < meta["threshold_tpr"] < 1.0
    # fresh negatives of the same distribution: the refit probe flags about fpr of them
    # (600 training negatives put the quantile within about 0.013 of the truth; 3 sigma allowed)
    fresh = np.random.default_rng(6).normal(size=(4000, 1, 8)).astype(np.float32)
    flagged = np.mean(probe.score_numpy(fresh)[:, 0] >= probe.threshold)
    assert abs(flagged - 0.1) < 0.04


def test_threshold_at_fpr_on_known_scores():
    y = np.array([0] * 100 + [1] * 10)
    scores = np.concatenate([np.linspace(0, 0.99, 100), np.full(10, 0.995)])
    thr, fpr, tpr = threshold_at_fpr(y, scores, 0.05)
    assert 0.93 < thr < 0.95 and fpr == pytest.approx(0.05, abs=0.011) and tpr == 1.0


def test_auroc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = np.round(rng.normal(size=50), 1)  # with ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert np.isnan(auroc(np.zeros(5), s[:5]))


def test_bootstrap_interval_covers_the_point_estimate_and_resamples_groups():
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 50)
    oof = np.clip(y * 0.3 + rng.uniform(0, 0.7, 100), 0, 1)
    gid = np.arange(100) // 2
    w = bootstrap_weights(gid, 500, np.random.default_rng(2))
    assert w.shape == (500, 100) and np.all(w[:, 0::2] == w[:, 1::2])  # twins are drawn together
    acc_ci, auc_ci = bootstrap_ci(y, oof, w)
    assert acc_ci[0] <= np.mean((oof >= 0.5) == y) <= acc_ci[1]
    assert auc_ci[0] <= auroc(y, oof) <= auc_ci[1] and auc_ci[1] - auc_ci[0] < 0.3


def test_metadata_is_complete_and_strict_json(tmp_path):
    X, y, groups = planted(n=40, layers=3, dim=6)
    probe = train_probe(
        X, y, groups, "meta", layers=[2, 0], labels=("cold", "hot"), n_bootstrap=50, n_shuffles=1, dataset_hash="ab"
    )
    meta = probe.metadata
    for key in ("format_version", "name", "description", "labels", "method", "best_layer", "aggregation", "per_layer",
                "threshold", "threshold_fpr", "model_id", "model_fingerprint", "hidden_size", "num_layers",
                "dataset_hash", "n_examples", "folds", "seed", "created"):
        assert key in meta, key
    assert probe.layers == (2, 0) and [e["layer"] for e in meta["per_layer"]] == [2, 0]
    assert meta["labels"] == ["cold", "hot"] and meta["hidden_size"] == 6 and meta["num_layers"] == 3
    for e in meta["per_layer"]:
        assert set(e) == {"layer", "accuracy_mean", "accuracy_std", "auroc_mean", "auroc_std", "shuffled_accuracy_mean",
                          "shuffled_auroc_mean", "accuracy_ci", "auroc_ci"}
    json.dumps(meta, allow_nan=False)
    from mlx_interp.probes.probe import Probe

    assert Probe.load(probe.save(tmp_path), hidden_size=6, num_layers=3).best_layer == probe.best_layer


def test_training_is_deterministic_for_a_seed():
    X, y, groups = planted(n=60, layers=2, dim=8, signal_layer=1)
    a = train_probe(X, y, groups, "d", n_bootstrap=100, n_shuffles=1, seed=3)
    b = train_probe(X, y, groups, "d", n_bootstrap=100, n_shuffles=1, seed=3)
    assert a.sha256 == b.sha256 and a.metadata["per_layer"] == b.metadata["per_layer"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"folds": 1}, "at least 2"),
        ({"folds": 50}, "need at least 50 groups"),
        ({"fpr": 0}, "fpr"),
        ({"method": "svm"}, "method"),
        ({"layers": [7]}, "layers"),
        ({"name": "../x"}, "not allowed"),
        ({"aggregation": "median"}, "aggregation"),
        ({"labels": ("a", "a")}, "labels"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    X, y, groups = planted(n=40, layers=2, dim=4, signal_layer=1)
    kwargs = {"name": "x", **kwargs}
    with pytest.raises(ValueError, match=match):
        train_probe(X, y, groups, n_bootstrap=0, n_shuffles=0, **kwargs)


def test_bad_data_is_a_clear_error():
    X, y, groups = planted(n=40, layers=2, dim=4, signal_layer=1)
    with pytest.raises(ValueError, match="only one class"):
        train_probe(X, np.zeros(40, int), groups, "x")
    with pytest.raises(ValueError, match="0/1"):
        train_probe(X, y * 2, groups, "x")
    with pytest.raises(ValueError, match="examples"):
        train_probe(X, y[:-1], groups, "x")
    X[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_probe(X, y, groups, "x")


# -- labelled files ------------------------------------------------------------------------------


def _write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return path


def test_read_labelled_rows(tmp_path):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]
    path = _write(
        tmp_path,
        [{"text": "a", "label": 1, "group": "g"}, "", {"messages": msgs, "label": 0}, {"body": "c", "y": True, "g": [1, 2]}],
    )
    with pytest.raises(ValueError, match=r"data.jsonl:4: needs a non-empty string 'text'"):
        read_labelled(path)
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")
    rows = read_labelled(path)
    assert len(rows) == 2 and rows[0] == {"line": 1, "text": "a", "label": 1, "group": "g"}
    assert rows[1]["messages"] == msgs and rows[1]["group"] == "line-3" and rows[1]["line"] == 3
    custom = read_labelled(_write(tmp_path, [{"body": "c", "y": True, "g": [1, 2]}], "c.jsonl"), "body", "y", "g")
    assert custom[0]["label"] == 1 and custom[0]["group"] == "[1, 2]"


@pytest.mark.parametrize(
    "line,match",
    [
        ("{bad json", "invalid JSON"),
        ('{"text": "a", "label": NaN}', "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"text": "a"}', "missing 'label'"),
        ('{"text": "a", "label": 2}', "must be 0, 1 or a string"),
        ('{"text": "", "label": 1}', "non-empty string"),
        ('{"messages": [{"role": "user"}], "label": 1}', "messages"),
        ('{"messages": [], "label": 1}', "messages"),
    ],
)
def test_read_labelled_errors_name_file_and_line(tmp_path, line, match):
    path = _write(tmp_path, [{"text": "ok", "label": 0}, line])
    with pytest.raises(ValueError, match=match) as info:
        read_labelled(path)
    assert str(info.value).startswith(f"{path}:2:")


def test_read_labelled_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_labelled(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="no examples"):
        read_labelled(tmp_path / "empty.jsonl")


def test_binary_labels():
    y, names = binary_labels([0, 1, 1])
    assert y.tolist() == [0, 1, 1] and names == ["negative", "positive"]
    y, names = binary_labels(["weather", "food", "food"])
    assert y.tolist() == [1, 0, 0] and names == ["food", "weather"]
    y, names = binary_labels(["weather", "food"], positive_label="food")
    assert y.tolist() == [0, 1] and names == ["weather", "food"]
    y, _ = binary_labels([0, 1, 1], positive_label="0")
    assert y.tolist() == [1, 0, 0]
    for values, kw, match in [
        (["a", "b", "c"], {}, "exactly two"),
        (["a", "b"], {"positive_label": "z"}, "not one of"),
        ([0, "a"], {}, "mix"),
        (["a", "a"], {}, "exactly two"),
        ([1, 1], {}, "same label"),
        ([0, 1], {"positive_label": "x"}, "must be 0 or 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            binary_labels(values, **kw)


def test_weighted_auroc_equals_the_pairwise_definition():
    from mlx_interp.probes.training import weighted_auroc

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.uniform(size=60), 1)  # many ties
    w = rng.integers(0, 3, size=(20, 60)).astype(float)
    pos, neg = y == 1, y == 0
    wins = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    expected = ((w[:, pos] @ wins) * w[:, neg]).sum(1) / (w[:, pos].sum(1) * w[:, neg].sum(1))
    np.testing.assert_allclose(weighted_auroc(y, s, w), expected, rtol=1e-12)
    assert weighted_auroc(y, s, np.ones((1, 60)))[0] == pytest.approx(auroc(y, s))
    assert np.isnan(weighted_auroc(y, s, np.where(pos, 0.0, 1.0)[None]))[0]
