"""Study 2: sycophancy is not one thing — separate probes for agreement, praise and correctness.

Then, with `knowledge` on (experiments.sycophancy_knowledge): which facts the
model knows (log-probability of the right vs the wrong answer), and SyA vs GA
on the known items at the read positions the literature uses.

Six contrasts between the four conditions (SyA, GA, SyPr, neutral), each with
per-layer grouped 5-fold CV (groups = items, so no item is on both sides of a
fold), shuffled-label baselines, bootstrap CIs, and a permutation p-value at
the best layer. Then the geometry: per layer, the cosine between the
SyA−neutral and GA−neutral mean-difference directions, with a bootstrap CI over
items, against depth as a fraction of the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlx_interp.steering.analysis import cosine_by_layer

from .common import SYCOPHANCY, read_jsonl, run_record

CONTRASTS = (
    ("SyA", "GA"),
    ("SyA", "neutral"),
    ("GA", "neutral"),
    ("SyPr", "neutral"),
    ("SyA", "SyPr"),
    ("GA", "SyPr"),
)


@dataclass
class SycophancyConfig:
    max_items: int | None = None  # None: every item
    folds: int = 5
    n_shuffles: int = 3  # shuffled-label CV per layer (the chance curve)
    n_permutations: int = 100  # for the p-value at each contrast's best layer
    n_bootstrap: int = 1000
    seed: int = 0
    knowledge: bool = True  # the knowledge check and the read-position study (sycophancy_knowledge)


def select_items(rows: list[dict], max_items: int | None) -> list[dict]:
    """Rows of the first max_items items, alternating factual and arithmetic items to stay mixed."""
    if max_items is None:
        return rows
    groups = list(dict.fromkeys(r["group"] for r in rows))
    facts = [g for g in groups if g.startswith("fact")]
    ariths = [g for g in groups if not g.startswith("fact")]
    chosen = [g for pair in zip(facts, ariths) for g in pair][:max_items]
    keep = set(chosen)
    return [r for r in rows if r["group"] in keep]


def permutation_p_value(X: np.ndarray, y: np.ndarray, groups, folds: int, observed_auroc: float, n: int, seed: int) -> float:
    """p that CV AUROC this high arises with labels shuffled (same folds, +1 correction)."""
    from mlx_interp.probes.training import cross_validate, cv_splits, group_ids

    gid = group_ids(groups)
    splits = cv_splits(y, gid, folds, seed)
    rng = np.random.default_rng(seed + 1)
    hits = 0
    for _ in range(n):
        yp = rng.permutation(y)
        _, _, aucs = cross_validate(X, yp, cv_splits(yp, gid, folds, seed), "logistic", 1.0)
        hits += float(np.nanmean(aucs)) >= observed_auroc - 1e-12
    del splits
    return (1 + hits) / (1 + n)


def direction_cosine(X: np.ndarray, cond: np.ndarray, groups: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """cos(mean SyA − mean neutral, mean GA − mean neutral) per layer, CI by resampling items."""

    def directions(idx_items):
        sel = np.isin(groups, idx_items)
        def mean(c):
            m = sel & (cond == c)
            return X[m].mean(axis=0)
        n = mean("neutral")
        return mean("SyA") - n, mean("GA") - n

    items = np.unique(groups)
    a, b = directions(items)
    cos = cosine_by_layer(a, b)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_bootstrap):
        # resample items with replacement; duplicates count twice via repetition of their rows
        pick = rng.choice(items, size=len(items), replace=True)
        counts = {g: c for g, c in zip(*np.unique(pick, return_counts=True))}
        w = np.array([counts.get(g, 0) for g in groups], dtype=np.float64)
        def wmean(c):
            m = (cond == c) * w
            return np.einsum("n,nld->ld", m, X) / m.sum()
        n = wmean("neutral")
        boots.append(cosine_by_layer(wmean("SyA") - n, wmean("GA") - n))
    boots = np.array(boots)
    return {"cosine": cos, "ci_low": np.nanquantile(boots, 0.025, axis=0), "ci_high": np.nanquantile(boots, 0.975, axis=0)}


def run(lm, out_dir: Path | None = None, config: SycophancyConfig = SycophancyConfig(), progress: bool = True,
        states: np.ndarray | None = None) -> dict:
    from mlx_interp.probes.training import train_probe

    from .artifacts import sycophancy_states

    rows = select_items(read_jsonl(SYCOPHANCY), config.max_items)
    X = states if states is not None else sycophancy_states(lm, rows, progress=progress)
    cond = np.array([r["condition"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    L = X.shape[1]
    contrasts = {}
    for pos, neg in CONTRASTS:
        sel = (cond == pos) | (cond == neg)
        y = (cond[sel] == pos).astype(int)
        probe = train_probe(X[sel], y, list(groups[sel]), "contrast", labels=(neg, pos), folds=config.folds,
                            n_shuffles=config.n_shuffles, n_bootstrap=config.n_bootstrap, seed=config.seed)
        per = probe.metadata["per_layer"]
        best = probe.best_layer
        best_entry = per[best]
        p = permutation_p_value(X[sel][:, best, :], y, list(groups[sel]), config.folds, best_entry["auroc_mean"],
                                config.n_permutations, config.seed) if config.n_permutations else None
        contrasts[f"{pos} vs {neg}"] = {
            "positive": pos, "negative": neg, "n": int(sel.sum()), "best_layer": best, "best_depth": (best + 1) / L,
            "best_accuracy": best_entry["accuracy_mean"], "best_auroc": best_entry["auroc_mean"],
            "best_accuracy_ci": best_entry["accuracy_ci"], "best_auroc_ci": best_entry["auroc_ci"],
            "shuffled_accuracy_at_best": best_entry["shuffled_accuracy_mean"],
            "permutation_p_at_best": p,
            "per_layer": per,
        }
    cos = direction_cosine(X, cond, groups, min(config.n_bootstrap, 300), config.seed)
    mid_late = [l for l in range(L) if 0.4 <= (l + 1) / L <= 0.9]
    result = {
        **run_record(lm, "sycophancy", config.seed, [SYCOPHANCY], asdict(config)),
        "n_items": len(set(groups)),
        "n_rows": len(rows),
        "contrasts": contrasts,
        "direction_cosine": {**cos, "depth": [(l + 1) / L for l in range(L)],
                             "mid_to_late_layers": mid_late,
                             "mid_to_late_mean": float(np.nanmean(cos["cosine"][mid_late])) if mid_late else None,
                             "min": float(np.nanmin(cos["cosine"])), "argmin_layer": int(np.nanargmin(cos["cosine"]))},
        "notes": "best_layer is chosen on the same CV scores it reports (optimistic by the max over layers); "
        "the permutation p-value is computed at that layer only.",
    }
    if config.knowledge:
        from . import sycophancy_knowledge

        result["knowledge_and_positions"] = sycophancy_knowledge.run(lm, rows, config, progress=progress)
    if out_dir is not None:
        from .common import write_results
        from .plotting import plot_sycophancy

        write_results(out_dir, "sycophancy", result)
        plot_sycophancy(result, Path(out_dir) / "sycophancy.png")
    return result
