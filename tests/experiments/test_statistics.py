"""The studies' statistics on constructed inputs whose answers are known."""

import math
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from mlx_interp.experiments import colour_swap, confound, contamination, sycophancy
from mlx_interp.experiments.decoding import _common_prefix_length, kl_divergence


def test_first_colour_takes_the_first_colour_word():
    assert colour_swap.first_colour(' "Red".') == "red"
    assert colour_swap.first_colour("the green, then red") == "green"
    assert colour_swap.first_colour("Reddish greenery") == "other"  # whole words only
    assert colour_swap.first_colour("gray") == "grey"
    assert colour_swap.first_colour("Paris") == "other"


def test_wilson_interval_known_values():
    lo, hi = colour_swap.wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    lo, hi = colour_swap.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-3)


def _upper_tail(k: int, n: int, p: Fraction) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly (independent of scipy, which the code uses)."""
    return float(sum(comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)))


def test_swap_p_value_is_binomial_against_smoothed_random_rate():
    # by hand: no random swaps in 2 gives the rate (0+1)/(2+2) = 1/4; P(X>=2 of 2) = 1/16, P(X>=1) = 7/16
    assert colour_swap.swap_p_value(2, 2, 0, 2) == pytest.approx(1 / 16)
    assert colour_swap.swap_p_value(1, 2, 0, 2) == pytest.approx(7 / 16)
    p = colour_swap.swap_p_value(30, 60, 0, 60)
    assert p == pytest.approx(_upper_tail(30, 60, Fraction(1, 62)), rel=1e-9)
    assert p < 1e-20
    # a vector no better than random is not significant
    assert colour_swap.swap_p_value(6, 60, 6, 60) > 0.3


def test_random_directions_share_one_direction_and_match_the_accumulated_push():
    rng = np.random.default_rng(0)
    ref = np.zeros((6, 16), np.float32)
    base = rng.standard_normal(16)
    ref[2], ref[3], ref[4] = base, 2 * base + 0.3 * rng.standard_normal(16), 3 * base  # nearly parallel, growing
    layers = (2, 3, 4)
    dirs = colour_swap.matched_random_directions(ref, layers, 4, seed=1)
    want = np.linalg.norm(ref[list(layers)].sum(axis=0))
    for d in dirs:
        rows = d[list(layers)]
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        assert np.allclose(unit, unit[0], atol=1e-6)  # one direction shared by every steered layer
        assert np.linalg.norm(rows.sum(axis=0)) == pytest.approx(want, rel=1e-5)  # the same accumulated push
        # the vector's per-layer profile is kept
        ratios = np.linalg.norm(rows, axis=1) / np.linalg.norm(ref[list(layers)], axis=1)
        assert np.allclose(ratios, ratios[0], rtol=1e-5)
        assert not d[[0, 1, 5]].any()
    assert abs(np.dot(dirs[0][3], dirs[1][3])) < 0.9 * np.linalg.norm(dirs[0][3]) * np.linalg.norm(dirs[1][3])
    again = colour_swap.matched_random_directions(ref, layers, 4, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(dirs, again))


def _rec(kind, item, condition, op, alpha, truth, answer, baseline, kl=0.0):
    return {"kind": kind, "item": item, "row": 0, "condition": condition, "op": op, "alpha": alpha, "truth": truth,
            "answer": answer, "baseline_answer": baseline, "text": answer, "kl": kl}


def test_colour_summary_counts_known_swaps_by_item():
    cfg = colour_swap.ColourConfig(add_alphas=(1.5,), reflect_alphas=(), headline_alpha=1.5, n_random=2,
                                   n_permutations=2000, n_bootstrap=500)
    recs = []
    # 5 items x 2 phrasings; items 0-2 green, 3-4 red. Unsteered: right everywhere except item 4 (no colour).
    for item in range(5):
        t = "green" if item < 3 else "red"
        other = colour_swap.OPPOSITE[t]
        for phrasing in range(2):
            base = t if item < 4 else "other"
            recs.append(_rec("question", f"g{item}", "baseline", "none", 0.0, t, base, base))
            # vector: both phrasings of items 0-3 swap; item 4 swaps on one phrasing
            ans = other if item < 4 or phrasing == 0 else "other"
            recs.append(_rec("question", f"g{item}", "vector", "add", 1.5, t, ans, base, kl=float(item)))
            recs.append(_rec("question", f"g{item}", "flipped", "add", 1.5, t, t, base))
            # random-0 swaps item 0 phrasing 0 only; random-1 never
            recs.append(_rec("question", f"g{item}", "random-0", "add", 1.5, t, other if item == 0 and phrasing == 0 else t, base))
            recs.append(_rec("question", f"g{item}", "random-1", "add", 1.5, t, t, base))
    recs.append(_rec("control", "c0", "baseline", "none", 0.0, "blue", "blue", "blue"))
    recs.append(_rec("control", "c0", "vector", "add", 1.5, "blue", "red", "blue"))
    recs.append(_rec("control", "c1", "baseline", "none", 0.0, None, "other", "other"))
    recs.append(_rec("control", "c1", "vector", "add", 1.5, None, "other", "other"))
    s = colour_swap.summarise(recs, cfg)
    assert s["baseline"]["n_correct"] == 8 and s["baseline"]["swap_rate"] == 0.0
    (e,) = s["sweep"]
    assert (e["all"]["swaps"], e["all"]["n"], e["all"]["n_items"]) == (9, 10, 5)
    assert (e["correct"]["swaps"], e["correct"]["n"], e["correct"]["n_items"]) == (8, 8, 4)  # item 4 was not answered right
    lo, hi = e["all"]["ci95"]
    assert lo <= 0.9 <= hi <= 1.0 and lo >= 0.7  # item resampling: the rate moves by items of 2 rows
    assert e["green_to_red"] == 1.0 and e["red_to_green"] == 0.75
    assert e["kl_mean"] == pytest.approx(2.0)
    # random: direction 0 swaps 1 of 10 rows, direction 1 none
    r = s["random"]
    assert r["all"]["per_direction"] == [0.1, 0.0] and r["all"]["mean"] == pytest.approx(0.05)
    assert r["all"]["sd"] == pytest.approx(np.std([0.1, 0.0], ddof=1))
    # by item, the vector beats random on all 5 items: exact one-sided sign test 1/32
    vr = e["vs_random"]
    assert (vr["items_up"], vr["items_down"]) == (5, 0) and vr["sign_test_p"] == pytest.approx(1 / 32)
    # with 5 items there are 32 sign patterns; only the all-positive one reaches the observed mean
    assert vr["permutation_p"] == pytest.approx(1 / 32, abs=0.015)
    assert s["flipped"]["all"]["rate"] == 0.0
    c = e["controls"]
    assert (c["contaminated"], c["eligible"]) == (1, 2) and c["contamination_rate"] == 0.5


def test_paired_item_test_and_clustered_interval():
    from mlx_interp.experiments.item_stats import clustered_rate_ci, paired_item_test

    t = paired_item_test([0.5, 1.0, 0.0, -0.5, 1.0, 0.5], n_permutations=4000, seed=0)
    assert (t.items_up, t.items_down, t.n_items) == (4, 1, 6)
    assert t.sign_test_p == pytest.approx(_upper_tail(4, 5, Fraction(1, 2)))  # ties (0) are left out
    # exact sign-flip p: 64 patterns of the six signs (the zero's sign does not matter)
    d = np.array([0.5, 1.0, 0.0, -0.5, 1.0, 0.5])
    patterns = np.array(np.meshgrid(*[[-1, 1]] * 6)).reshape(6, -1).T
    exact = np.mean((patterns * d).mean(axis=1) >= d.mean() - 1e-12)
    assert t.permutation_p == pytest.approx(exact, abs=0.02)
    assert paired_item_test([-1.0] * 8).sign_test_p == 1.0
    lo, hi = clustered_rate_ci(np.array([2, 2, 0, 0]), np.array([2, 2, 2, 2]), n_resamples=4000)
    assert lo < 0.5 < hi and lo >= 0.0 and hi <= 1.0
    assert clustered_rate_ci(np.array([2, 2]), np.array([2, 2])) == (1.0, 1.0)


def test_kl_divergence_known_values():
    p = np.log(np.array([0.5, 0.5]))
    q = np.log(np.array([0.9, 0.1]))
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))


def test_common_prefix_keeps_one_token_per_prompt():
    assert _common_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert _common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert _common_prefix_length([[9], [1, 2]]) == 0


def test_direction_cosine_recovers_constructed_geometry():
    rng = np.random.default_rng(0)
    L, D, items = 3, 8, 20
    a = np.zeros((L, D)); a[:, 0] = 1.0  # SyA - neutral
    b = np.zeros((L, D)); b[:, 0] = 1.0; b[1, 0] = 0.0; b[1, 1] = 1.0  # GA - neutral: same at 0 and 2, orthogonal at 1
    b[2] = [0.6, 0.8] + [0] * (D - 2)
    X, cond, groups = [], [], []
    for g in range(items):
        base = rng.standard_normal((L, D)) * 0.01
        for c, shift in (("neutral", 0), ("SyA", a), ("GA", b)):
            X.append(base + shift); cond.append(c); groups.append(f"g{g}")
    out = sycophancy.direction_cosine(np.array(X), np.array(cond), np.array(groups), n_bootstrap=50, seed=0)
    assert out["cosine"] == pytest.approx([1.0, 0.0, 0.6], abs=0.02)
    assert np.all(out["ci_low"] <= out["cosine"] + 1e-9) and np.all(out["cosine"] <= out["ci_high"] + 1e-9)


def test_naive_probe_learns_the_confound_it_was_trained_on():
    """Train on (pressure+emotion) vs (neither) where only emotion is visible: it flags emotion, not pressure."""
    rng = np.random.default_rng(0)
    rows, X = [], []
    cells = {"direct_pressure": (1, 1), "neutral_question": (0, 0), "clinical_pressure": (1, 0), "irrelevant_emotion": (0, 1)}
    for g in range(30):
        for c, (p, e) in cells.items():
            x = rng.standard_normal(6) * 0.5
            x[0] += 3.0 * e  # emotion is what the representation carries; pressure is invisible
            rows.append((c, g)); X.append(x)
    X = np.array(X)
    cond = np.array([c for c, _ in rows]); groups = np.array([f"g{g}" for _, g in rows])
    train = (cond == "direct_pressure") | (cond == "neutral_question")
    y = (cond == "direct_pressure").astype(int)
    scores = confound.cross_fitted_scores(X, y, train, groups, folds=5, seed=0)
    assert not np.isnan(scores).any()
    assert scores[cond == "irrelevant_emotion"].mean() > 0.8
    assert scores[cond == "clinical_pressure"].mean() < 0.2
    sep = confound.separation(scores[cond == "irrelevant_emotion"], scores[cond == "clinical_pressure"])
    assert sep["auroc"] > 0.95 and sep["cohens_d"] > 2


def test_contamination_shift_and_summary():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[0.0, 1.0], [0.0, 2.0]])
    assert contamination.cosine_shift(a, b) == pytest.approx([1.0, 0.0])
    shifts = {"d": {"rubric": np.full(8, 0.3), "padding": np.full(8, 0.1), "wrong_rubric": np.linspace(0.1, 0.5, 8)}}
    out = contamination.summarise(shifts, n_bootstrap=200, seed=0)["d"]
    assert out["rubric"]["shift"] == pytest.approx(0.3) and out["rubric"]["ci95"] == pytest.approx([0.3, 0.3])
    assert out["rubric_minus_padding"]["diff"] == pytest.approx(0.2)
    lo, hi = out["wrong_rubric"]["ci95"]
    assert lo < 0.3 < hi and 0.1 <= lo and hi <= 0.5
    assert contamination.summary_layers(30) == list(range(7, 27))
