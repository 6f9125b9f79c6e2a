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


def test_random_directions_match_norm_per_layer():
    ref = np.zeros((6, 16), np.float32)
    ref[2] = 3.0
    ref[3] = np.arange(16)
    dirs = colour_swap.random_directions(ref, (2, 3), 4, seed=1)
    for d in dirs:
        assert np.allclose(np.linalg.norm(d, axis=1)[[2, 3]], np.linalg.norm(ref, axis=1)[[2, 3]], rtol=1e-5)
        assert not d[[0, 1, 4, 5]].any()
    assert abs(np.dot(dirs[0][3], dirs[1][3])) < np.linalg.norm(ref[3]) ** 2  # not all the same direction
    again = colour_swap.random_directions(ref, (2, 3), 4, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(dirs, again))


def _rec(kind, item, condition, op, alpha, truth, answer, baseline, kl=0.0):
    return {"kind": kind, "item": item, "condition": condition, "op": op, "alpha": alpha, "truth": truth,
            "answer": answer, "baseline_answer": baseline, "text": answer, "kl": kl}


def test_colour_summary_counts_known_swaps():
    cfg = colour_swap.ColourConfig(add_alphas=(1.0,), reflect_alphas=(), n_random=2)
    recs = []
    truths = ["green", "red"] * 5  # 10 questions
    for i, t in enumerate(truths):
        other = colour_swap.OPPOSITE[t]
        recs.append(_rec("question", i, "baseline", "none", 0.0, t, t, t))
        # vector: swaps on the first 6 questions (3 green->red, 3 red->green), no colour on one
        ans = other if i < 6 else ("other" if i == 6 else t)
        recs.append(_rec("question", i, "vector", "add", 1.0, t, ans, t, kl=float(i)))
        recs.append(_rec("question", i, "flipped", "add", 1.0, t, t, t))
        recs.append(_rec("question", i, f"random-{i % 2}", "add", 1.0, t, other if i == 0 else t, t))
    recs.append(_rec("control", 0, "baseline", "none", 0.0, "blue", "blue", "blue"))
    recs.append(_rec("control", 0, "vector", "add", 1.0, "blue", "red", "blue"))
    recs.append(_rec("control", 1, "baseline", "none", 0.0, None, "other", "other"))
    recs.append(_rec("control", 1, "vector", "add", 1.0, None, "other", "other"))
    s = colour_swap.summarise(recs, cfg)
    assert s["baseline"]["correct_rate"] == 1.0 and s["baseline"]["swap_rate"] == 0.0
    (e,) = s["sweep"]
    assert e["swaps"] == 6 and e["swap_rate"] == 0.6 and e["n"] == 10
    assert e["green_to_red"] == 0.6 and e["red_to_green"] == 0.6
    assert e["no_colour_rate"] == 0.1 and e["kept_truth_rate"] == 0.3
    assert e["kl_mean"] == pytest.approx(4.5)
    assert e["flipped"]["swap_rate"] == 0.0
    assert e["random"]["swaps"] == 1 and e["random"]["per_direction_max"] == 0.2 and e["random"]["per_direction_min"] == 0.0
    # 6 swaps of 10 against the random rate (1 swap of 10, smoothed: 2/12)
    assert e["p_value_vs_random"] == pytest.approx(_upper_tail(6, 10, Fraction(2, 12)), rel=1e-9)
    assert e["controls"]["contaminated"] == 1 and e["controls"]["contamination_rate"] == 0.5


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
