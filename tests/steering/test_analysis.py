"""Research statistics on inputs with known answers."""

import numpy as np
import pytest

from mlx_interp.steering.analysis import (
    binomial_test,
    bootstrap_ci,
    cohens_d,
    cosine_by_layer,
    difference_bootstrap_ci,
    norms_by_layer,
    paired_bootstrap_ci,
    permutation_test,
)


def test_cosine_by_layer_known_values():
    a = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    b = np.array([[0.0, 3.0, 0.0], [2.0, 2.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    cos = cosine_by_layer(a, b)
    np.testing.assert_allclose(cos[:3], [0.0, 1.0, -1.0], atol=1e-12)
    assert np.isnan(cos[3])  # no direction at that layer


def test_cosine_by_layer_shape_mismatch():
    with pytest.raises(ValueError, match="one shape"):
        cosine_by_layer(np.zeros((2, 3)), np.zeros((3, 3)))


def test_norms_by_layer():
    x = np.zeros((2, 3, 2))
    x[0, :, 0] = [3, 1, 0]
    x[1, :, 1] = [5, 1, 2]
    stats = norms_by_layer(x)
    np.testing.assert_allclose(stats.mean, [4.0, 1.0, 1.0])
    np.testing.assert_allclose(stats.std, [np.std([3, 5], ddof=1), 0.0, np.std([0, 2], ddof=1)])


def test_bootstrap_ci_of_constant_is_degenerate():
    assert bootstrap_ci(np.full(20, 3.5)) == (3.5, 3.5, 3.5)


def test_bootstrap_ci_covers_the_mean_and_is_reproducible():
    values = np.random.default_rng(1).normal(10.0, 1.0, size=200)
    est, low, high = bootstrap_ci(values, seed=7)
    assert low < est < high and low < 10.0 < high
    assert high - low < 0.5  # about 4 standard errors of 0.07
    assert bootstrap_ci(values, seed=7) == (est, low, high)
    assert bootstrap_ci(values, statistic=np.median, seed=7)[0] == pytest.approx(np.median(values))


def test_paired_and_difference_bootstrap():
    a = np.arange(50, dtype=float)
    est, low, high = paired_bootstrap_ci(a + 2.0, a)
    assert (est, low, high) == (2.0, 2.0, 2.0)  # every paired difference is exactly 2
    rng = np.random.default_rng(0)
    est, low, high = difference_bootstrap_ci(rng.normal(5, 1, 300), rng.normal(0, 1, 300))
    assert 4.5 < low < est < high < 5.5


def test_permutation_test_identical_distributions_give_large_p():
    rng = np.random.default_rng(3)
    p = permutation_test(rng.normal(size=40), rng.normal(size=40), n_permutations=500, seed=0)
    assert p > 0.1


def test_permutation_test_separated_distributions_give_small_p():
    a = np.linspace(10, 11, 20)
    b = np.linspace(0, 1, 20)
    p = permutation_test(a, b, n_permutations=999, seed=0)
    assert p == pytest.approx(1 / 1000)  # +1 correction: never below 1/(n+1)
    assert permutation_test(a, b, n_permutations=999, alternative="less") == pytest.approx(1.0)


def test_permutation_test_p_of_equal_samples_is_one():
    a = np.ones(10)
    assert permutation_test(a, a.copy(), n_permutations=99) == 1.0


# Exact values worked by hand (binomial_test wraps scipy, so comparing with scipy would test nothing).
@pytest.mark.parametrize("k, n, p, alternative, expected", [
    (9, 10, 0.5, "greater", 11 / 1024),           # C(10,9) + C(10,10) over 2^10
    (3, 3, 0.5, "greater", 1 / 8),
    (0, 3, 0.5, "less", 1 / 8),
    (1, 4, 0.25, "greater", 1 - (3 / 4) ** 4),    # 175/256
    (3, 20, 0.5, "less", (1 + 20 + 190 + 1140) / 2**20),
    (0, 4, 0.5, "two-sided", 2 / 16),             # both tails as unlikely as 0 of 4: 0 and 4
    (0, 5, 0.5, "greater", 1.0),
])
def test_binomial_test_exact_values(k, n, p, alternative, expected):
    assert binomial_test(k, n, p, alternative) == pytest.approx(expected, rel=1e-12)


def test_binomial_test_exact_value():
    # P(X >= 9 | n=10, p=0.5) = (10 + 1) / 1024
    assert binomial_test(9, 10) == pytest.approx(11 / 1024)
    with pytest.raises(ValueError):
        binomial_test(11, 10)


def test_cohens_d_known_value():
    a = np.array([2.0, 4.0])
    b = np.array([0.0, 2.0])
    assert cohens_d(a, b) == pytest.approx(2.0 / np.sqrt(2.0))
