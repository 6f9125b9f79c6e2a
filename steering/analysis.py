"""Statistics for steering research: per-layer geometry and honest uncertainty.

Everything takes numpy arrays and a seed, so a study is reproducible from its
inputs. Resampling tests report p-values with the +1 correction (the observed
labelling counts as one of the permutations), so p is never exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
_EPS = 1e-12


def cosine_by_layer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of a[l] and b[l] for each layer: (L, D), (L, D) -> (L,).

    A layer where either row is all zero has no direction; its cosine is NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine_by_layer needs two (layers, hidden) arrays of one shape, got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dots = np.einsum("ld,ld->l", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (na * nb)
    cos[(na < _EPS) | (nb < _EPS)] = np.nan
    return np.clip(cos, -1.0, 1.0)


@dataclass(frozen=True)
class LayerNorms:
    mean: np.ndarray  # (L,)
    std: np.ndarray  # (L,)


def norms_by_layer(x: np.ndarray) -> LayerNorms:
    """Mean and standard deviation over samples of the residual norm at each layer: (N, L, D) -> (L,), (L,)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"norms_by_layer needs (samples, layers, hidden), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=2)  # (N, L)
    return LayerNorms(mean=norms.mean(axis=0), std=norms.std(axis=0, ddof=1) if len(norms) > 1 else np.zeros(norms.shape[1]))


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def bootstrap_ci(
    values,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high): the statistic on the data and its percentile bootstrap interval."""
    _check_confidence(confidence)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D array, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(n_resamples, len(values)))
    stats = np.array([statistic(values[row]) for row in idx], dtype=np.float64)
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(statistic(values)), float(low), float(high)


def paired_bootstrap_ci(
    a,
    b,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Interval for statistic(a - b) where a[i] and b[i] were measured on the same item (e.g. steered vs not)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need one shape, got {a.shape} and {b.shape}")
    return bootstrap_ci(a - b, statistic, n_resamples, confidence, seed)


def difference_bootstrap_ci(
    a,
    b,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Interval for statistic(a) - statistic(b) with a and b independent samples (each resampled on its own)."""
    _check_confidence(confidence)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or not len(a) or not len(b):
        raise ValueError("difference_bootstrap_ci needs two non-empty 1-D arrays")
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), size=(n_resamples, len(a)))
    ib = rng.integers(0, len(b), size=(n_resamples, len(b)))
    stats = np.array([statistic(a[x]) - statistic(b[y]) for x, y in zip(ia, ib)])
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(statistic(a) - statistic(b)), float(low), float(high)


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a) - np.mean(b))


def permutation_test(
    a,
    b,
    statistic: Callable[[np.ndarray, np.ndarray], float] = mean_difference,
    n_permutations: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alternative: str = "two-sided",
) -> float:
    """p-value that a and b come from one distribution, by relabelling the pooled samples.

    p = (1 + #{permuted statistic at least as extreme as observed}) / (1 + n_permutations).
    alternative: "two-sided" (|stat|), "greater" (stat large) or "less" (stat small).
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not len(a) or not len(b):
        raise ValueError("permutation_test needs two non-empty samples")
    pooled = np.concatenate([a, b])
    observed = statistic(a, b)
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_permutations):
        perm = rng.permutation(pooled)
        stat = statistic(perm[: len(a)], perm[len(a) :])
        if alternative == "two-sided":
            hits += abs(stat) >= abs(observed) - 1e-12
        elif alternative == "greater":
            hits += stat >= observed - 1e-12
        else:
            hits += stat <= observed + 1e-12
    return (1 + hits) / (1 + n_permutations)


def binomial_test(k: int, n: int, p: float = 0.5, alternative: str = "greater") -> float:
    """Exact binomial p-value for k successes in n trials with success probability p."""
    from scipy.stats import binomtest

    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return float(binomtest(int(k), int(n), p, alternative=alternative).pvalue)


def cohens_d(a, b) -> float:
    """Standardised mean difference (a - b) with the pooled standard deviation."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("cohens_d needs at least two values in each sample")
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return float((a.mean() - b.mean()) / max(np.sqrt(pooled), _EPS))
