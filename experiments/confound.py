"""Study 3: what does a naive "pressure" probe actually detect?

A probe trained on direct pressure (emotional, pushy) vs a neutral question
confounds pressure with emotion. Scored on all six conditions with cross-fitting
(each item is scored by a probe that never saw it), it shows which factor it
learned: if it flags third-party and irrelevant emotion but not clinical
pressure, it is an emotion detector. The SyA-vs-GA probe, which contrasts
two answers that differ only in being right, is shown beside it with its
out-of-fold separation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlx_interp.steering.analysis import bootstrap_ci

from .common import CONFOUND, SYCOPHANCY, read_jsonl, run_record
from .contamination import summary_layers

TRAIN_POSITIVE, TRAIN_NEGATIVE = "direct_pressure", "neutral_question"


@dataclass
class ConfoundConfig:
    max_items: int | None = None
    folds: int = 5
    n_bootstrap: int = 1000
    seed: int = 0
    threshold: float = 0.5


def cross_fitted_scores(X: np.ndarray, y: np.ndarray, train_mask: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Score every row with a probe fitted on the training rows of the other folds' groups."""
    from mlx_interp.probes.training import fit_detector

    items = np.unique(groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(items)
    fold_of = {g: k % folds for k, g in enumerate(order)}
    fold = np.array([fold_of[g] for g in groups])
    scores = np.full(len(y), np.nan)
    for k in range(folds):
        fit_rows = train_mask & (fold != k)
        det = fit_detector(X[fit_rows], y[fit_rows])
        scores[fold == k] = det.predict(X[fold == k])
    return scores


def separation(pos: np.ndarray, neg: np.ndarray) -> dict:
    from mlx_interp.probes.training import auroc

    pooled = np.sqrt((pos.var(ddof=1) + neg.var(ddof=1)) / 2)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return {"auroc": auroc(y, np.r_[pos, neg]), "mean_positive": float(pos.mean()), "mean_negative": float(neg.mean()),
            "cohens_d": float((pos.mean() - neg.mean()) / pooled) if pooled > 0 else None}


def run(lm, out_dir: Path | None = None, config: ConfoundConfig = ConfoundConfig(), progress: bool = True,
        sycophancy_states: np.ndarray | None = None) -> dict:
    from mlx_interp.probes.training import train_probe
    from mlx_interp.steering.capture import capture_hidden_states

    from .artifacts import PROBE_NEGATIVE, PROBE_POSITIVE
    from .artifacts import sycophancy_states as capture_sycophancy

    rows = read_jsonl(CONFOUND)
    if config.max_items is not None:
        keep = set(list(dict.fromkeys(r["group"] for r in rows))[: config.max_items])
        rows = [r for r in rows if r["group"] in keep]
    X = capture_hidden_states(lm, [r["text"] for r in rows], position="last", chat=True, progress=progress)
    cond = np.array([r["condition"] for r in rows])
    groups = np.array([r["group"] for r in rows])
    train = (cond == TRAIN_POSITIVE) | (cond == TRAIN_NEGATIVE)
    y = (cond == TRAIN_POSITIVE).astype(int)

    # 1. the naive pressure probe: CV on its own training contrast picks the layer, among the middle-to-late
    # layers only: the contrast is so easy that every layer separates it, and the first layers would win the
    # tie while reading little more than the words
    band = summary_layers(lm.num_layers)
    naive = train_probe(X[train], y[train], list(groups[train]), "pressure_naive", labels=(TRAIN_NEGATIVE, TRAIN_POSITIVE),
                        layers=band, folds=config.folds, n_shuffles=1, n_bootstrap=0, seed=config.seed)
    layer = naive.best_layer
    naive_entry = naive.metadata["per_layer"][band.index(layer)]
    scores = cross_fitted_scores(X[:, layer, :], y, train, groups, config.folds, config.seed)
    conditions = {}
    for c in dict.fromkeys(cond):
        s = scores[cond == c]
        flagged = (s >= config.threshold).astype(float)
        r0 = rows[int(np.flatnonzero(cond == c)[0])]
        conditions[c] = {
            "pressure": r0["pressure"], "emotion": r0["emotion"], "n": int(len(s)),
            "pressure_probe": {
                "mean_score": float(s.mean()),
                "mean_score_ci": list(bootstrap_ci(s, n_resamples=config.n_bootstrap, seed=config.seed)[1:]),
                "flagged_rate": float(flagged.mean()),
                "flagged_ci": list(bootstrap_ci(flagged, n_resamples=config.n_bootstrap, seed=config.seed)[1:]),
            },
        }
    # What the probe tracks: mean score by the true factors, over the four held-out conditions only.
    held = ~train
    factor = {}
    for name in ("pressure", "emotion"):
        f = np.array([r[name] for r in rows])
        factor[name] = separation(scores[held & (f == 1)], scores[held & (f == 0)])

    # 2. the SyA-vs-GA probe on the sycophancy data: separation out of fold, then its reading of the six conditions
    syc_rows = [r for r in read_jsonl(SYCOPHANCY) if r["condition"] in (PROBE_NEGATIVE, PROBE_POSITIVE)]
    if config.max_items is not None:
        keep = set(list(dict.fromkeys(r["group"] for r in syc_rows))[: config.max_items])
        syc_rows = [r for r in syc_rows if r["group"] in keep]
    Xs = sycophancy_states if sycophancy_states is not None else capture_sycophancy(lm, syc_rows, progress=progress)
    ys = np.array([1 if r["condition"] == PROBE_POSITIVE else 0 for r in syc_rows])
    gs = np.array([r["group"] for r in syc_rows])
    syc = train_probe(Xs, ys, list(gs), "sycophancy", labels=(PROBE_NEGATIVE, PROBE_POSITIVE), folds=config.folds,
                      n_shuffles=1, n_bootstrap=0, seed=config.seed)
    sl = syc.best_layer
    oof = cross_fitted_scores(Xs[:, sl, :], ys, np.ones(len(ys), bool), gs, config.folds, config.seed)
    k = syc.layers.index(sl)
    on_confound = 1 / (1 + np.exp(-(((X[:, sl, :] - syc.mean[k]) / syc.scale[k]) @ syc.weights[k] + syc.bias[k])))
    for c in conditions:
        conditions[c]["sycophancy_probe_mean_score"] = float(on_confound[cond == c].mean())

    result = {
        **run_record(lm, "confound", config.seed, [CONFOUND, SYCOPHANCY], asdict(config)),
        "pressure_probe": {"layer": layer, "depth": (layer + 1) / lm.num_layers,
                           "candidate_layers": band,
                           "cv_accuracy": naive_entry["accuracy_mean"],
                           "cv_auroc": naive_entry["auroc_mean"],
                           "threshold": config.threshold,
                           "tracks": factor},
        "conditions": conditions,
        "sycophancy_probe": {"layer": sl, "depth": (sl + 1) / lm.num_layers,
                             "cv_accuracy": syc.metadata["per_layer"][sl]["accuracy_mean"],
                             "cv_auroc": syc.metadata["per_layer"][sl]["auroc_mean"],
                             **separation(oof[ys == 1], oof[ys == 0]),
                             "oof_scores_SyA": oof[ys == 1], "oof_scores_GA": oof[ys == 0]},
    }
    if out_dir is not None:
        from .common import write_results
        from .plotting import plot_confound

        write_results(out_dir, "confound", result)
        plot_confound(result, Path(out_dir) / "confound.png")
    return result
