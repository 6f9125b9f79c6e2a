"""Statistics for rows that come in groups: two phrasings of one item are not two independent trials.

Every test and interval here takes one value per item (or per-item counts), so
a pair of phrasings counts once. Intervals resample whole items (a clustered
bootstrap); tests flip the sign of each item's paired difference (a
permutation test by item) or count the items that moved each way (an exact
sign test on items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlx_interp.steering.analysis import binomial_test


def items_of(rows: list[dict], key: str = "item") -> dict:
    """Rows grouped by item, in first-seen order."""
    out: dict = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def clustered_rate_ci(hits: np.ndarray, totals: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of sum(hits)/sum(totals), resampling items (hits[i] of totals[i] rows of item i)."""
    hits = np.asarray(hits, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    if len(hits) == 0 or totals.sum() == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(hits), size=(n_resamples, len(hits)))
    num, den = hits[idx].sum(axis=1), totals[idx].sum(axis=1)
    rates = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    tail = (1 - confidence) / 2
    low, high = np.quantile(rates, [tail, 1 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedItemTest:
    n_items: int
    mean_difference: float  # mean over items of (condition − reference)
    items_up: int  # items where the condition's rate is higher
    items_down: int
    sign_test_p: float  # exact, one-sided: more items up than a fair coin gives
    permutation_p: float  # sign-flip permutation of the item differences, one-sided, +1 corrected


def paired_item_test(differences, n_permutations: int = 10000, seed: int = 0) -> PairedItemTest:
    """One-sided tests that a condition raises a per-item rate over its reference (differences = condition − reference)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("paired_item_test needs one difference per item")
    up, down = int(np.sum(d > 1e-12)), int(np.sum(d < -1e-12))
    sign_p = binomial_test(up, up + down, 0.5, alternative="greater") if up + down else 1.0
    rng = np.random.default_rng(seed)
    observed = d.mean()
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_permutations, len(d)))
    hits = int(np.sum((signs * d).mean(axis=1) >= observed - 1e-12))
    return PairedItemTest(len(d), float(observed), up, down, float(sign_p), (1 + hits) / (1 + n_permutations))
