"""Train probes from labelled activations, with the checks a reader of the numbers needs.

Per layer: standardise, fit an L2 logistic regression (or a difference-of-means
detector), and measure it by grouped, stratified k-fold cross-validation, so
that examples of one group (one source text, one conversation, one template)
never sit on both sides of a split. Next to each layer's CV accuracy and AUROC
stand a shuffled-label baseline (same folds, permuted labels: what chance
looks like with this many examples and dimensions) and bootstrap 95% intervals
over the out-of-fold predictions, resampling whole groups. The final detector
of every layer is refit on all data; the threshold is set on the best layer's
out-of-fold scores of the negative class at the requested false-positive rate.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from mlx_interp.steering.artifacts import FORMAT_VERSION, check_name, dataset_hash as files_hash, json_safe_float, utc_now

from . import aggregation as agg
from .positions import POSITIONS, TOKEN, capture_at, example_spans
from .probe import AGGREGATIONS, METHODS, Probe

MAX_ITER = 300  # lbfgs iterations; standardised data with C ~ 1 converges well within this
DEFAULT_SHUFFLES = 3
INNER_FOLDS = 3
PLATT_MIN_SLOPE = 1e-3  # a detector with no held-out ranking is calibrated to (almost) a constant
# Calibration may soften a detector (shrink its logit) but not sharpen it past its regularised fit:
# held-out separation of the training phrasings is no licence for 0/1 readings on other text.
PLATT_MAX_SLOPE = 1.0
LOGIT_CLIP = 1e-9  # nested CV: folds used inside each outer training set to pick the layer
SCALE_FLOOR = 1e-6  # features with (almost) no variance are left unscaled rather than blown up
CI_LEVEL = 95.0
# Hundreds of small fits: BLAS threads only contend with each other (and spin-wait badly on a busy machine).
BLAS_THREADS = 1


@dataclass
class LinearDetector:
    """One layer's detector in standardised coordinates: sigmoid(((x - mean) / scale) . w + b)."""

    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = (X - self.mean) / self.scale
        return _sigmoid(z @ self.w + self.b)


# -- fitting ----------------------------------------------------------------------------------


def fit_detector(X: np.ndarray, y: np.ndarray, method: str = "logistic", C: float = 1.0) -> LinearDetector:
    """Fit one layer's detector on (n, D) activations and 0/1 labels."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale < SCALE_FLOOR, 1.0, scale)
    Z = (X - mean) / scale
    if method == "logistic":
        w, b = _fit_logistic(Z, y, C)
    elif method == "diff_means":
        w, b = _fit_diff_means(Z, y)
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return LinearDetector(mean, scale, w, b)


def _fit_logistic(Z: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """L2 logistic regression (lbfgs) on standardised activations."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=MAX_ITER, solver="lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unconverged fit on separable data is still a fine detector
        model.fit(Z, y)
    return model.coef_[0], float(model.intercept_[0])


def _fit_diff_means(Z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Direction mean(pos) - mean(neg); bias puts the decision at the midpoint of the class means.

    The logit is scaled by the separation over the pooled variance of the
    projections (the log-likelihood ratio of two equal-variance Gaussians), so
    the probabilities are meaningful rather than an arbitrary squashing.
    """
    pos, neg = Z[y == 1], Z[y == 0]
    direction = pos.mean(axis=0) - neg.mean(axis=0)
    norm = np.linalg.norm(direction)
    if norm == 0:
        return np.zeros(Z.shape[1]), 0.0
    unit = direction / norm
    p_pos, p_neg = pos @ unit, neg @ unit
    gap = p_pos.mean() - p_neg.mean()
    resid = np.concatenate([p_pos - p_pos.mean(), p_neg - p_neg.mean()])
    var = max(float(resid @ resid) / max(len(resid) - 2, 1), 1e-12)
    k = gap / var
    midpoint = (p_pos.mean() + p_neg.mean()) / 2
    return k * unit, float(-k * midpoint)


# -- cross-validation -------------------------------------------------------------------------


def group_ids(groups: Sequence[Hashable]) -> np.ndarray:
    """Integer ids for arbitrary hashable groups, in order of first appearance."""
    seen: dict = {}
    return np.array([seen.setdefault(g, len(seen)) for g in groups], dtype=np.int64)


def cv_splits(y: np.ndarray, groups: np.ndarray, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group k-fold: each group lies wholly in one test fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if n_groups < folds:
        raise ValueError(f"{folds} folds need at least {folds} groups, the data has {n_groups}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class smaller than `folds` only warns; folds stay valid
        splits = [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups)]
    for tr, te in splits:  # the guarantee everything downstream relies on
        assert not set(groups[tr]) & set(groups[te]), "a group straddles a fold"
    return splits


def auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    y = np.asarray(y)
    pos, neg = scores[y == 1], scores[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def cross_validate(X: np.ndarray, y: np.ndarray, splits, method: str, C: float) -> tuple[np.ndarray, ...]:
    """Out-of-fold probabilities (n,), per-fold accuracies and AUROCs for one layer."""
    oof = np.empty(len(y), dtype=np.float64)
    accs, aucs = [], []
    for tr, te in splits:
        if len(np.unique(y[tr])) < 2:  # possible only for shuffled labels in tiny data
            prob = np.full(len(te), float(np.mean(y[tr])))
        else:
            prob = fit_detector(X[tr], y[tr], method, C).predict(X[te])
        oof[te] = prob
        accs.append(float(np.mean((prob >= 0.5) == y[te])))
        aucs.append(auroc(y[te], prob))
    return oof, np.array(accs), np.array(aucs)


def bootstrap_weights(gid: np.ndarray, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) example weights of a cluster bootstrap: whole groups are drawn with replacement."""
    n_groups = int(gid.max()) + 1
    draws = rng.integers(0, n_groups, size=(n_bootstrap, n_groups))
    counts = np.zeros((n_bootstrap, n_groups))
    np.add.at(counts, (np.repeat(np.arange(n_bootstrap), n_groups), draws.ravel()), 1.0)
    return counts[:, gid]


def bootstrap_ci(y: np.ndarray, oof: np.ndarray, weights: np.ndarray) -> tuple[list, list]:
    """95% percentile intervals of accuracy and AUROC under bootstrap weights (B, n)."""
    correct = ((oof >= 0.5) == y).astype(np.float64)
    total = weights.sum(axis=1)
    acc = np.where(total > 0, weights @ correct / np.maximum(total, 1e-12), np.nan)
    auc = weighted_auroc(y, oof, weights)
    lo, hi = (100 - CI_LEVEL) / 2, 100 - (100 - CI_LEVEL) / 2
    return _percentiles(acc, lo, hi), _percentiles(auc, lo, hi)


def weighted_auroc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC under each row of example weights (B, n), ties counting half; NaN where a class has no weight.

    Sorting once and taking cumulative negative weight keeps this O(B n)
    rather than O(B n_pos n_neg) for the pairwise comparison.
    """
    order = np.argsort(scores, kind="stable")
    s, is_pos = scores[order], (y[order] == 1)
    w = weights[:, order]
    w_neg = np.where(is_pos, 0.0, w)
    cum = np.cumsum(w_neg, axis=1)
    # tie blocks: negatives strictly below a score, and negatives equal to it
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    block = np.repeat(np.arange(len(start)), counts)
    end = start + counts - 1
    below = cum[:, start[block]] - w_neg[:, start[block]]
    equal = cum[:, end[block]] - below
    w_pos = np.where(is_pos, w, 0.0)
    num = (w_pos * (below + 0.5 * equal)).sum(axis=1)
    den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


def _percentiles(values: np.ndarray, lo: float, hi: float) -> list:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return [None, None]
    return [float(np.percentile(values, lo)), float(np.percentile(values, hi))]


# -- the whole procedure ----------------------------------------------------------------------


def train_probe(
    X: np.ndarray,
    y: np.ndarray,
    groups: Sequence[Hashable],
    name: str,
    *,
    layers: Sequence[int] | None = None,
    method: str = "logistic",
    folds: int = 5,
    C: float = 1.0,
    fpr: float = 0.05,
    seed: int = 0,
    n_bootstrap: int = 1000,
    n_shuffles: int = DEFAULT_SHUFFLES,
    labels: Sequence[str] = ("negative", "positive"),
    model=None,
    dataset_hash: str | None = None,
    progress: bool = False,
    description: str = "",
    aggregation: str = "mean",
    position: str | None = None,
    sequences: Sequence[Hashable] | None = None,
    ema_window: int = agg.DEFAULT_EMA_WINDOW,
    layer_band_declared: bool = False,
    calibrate: bool = True,
) -> Probe:
    """Cross-validate and fit a probe at every layer of X (N, L, D) (or of `layers`); see the module docstring.

    Rows are states at the probe's `position`. For `token` probes a row is one
    token and `sequences` says which response it belongs to (its response
    aggregates set the aggregate thresholds); `groups` keeps every token of an
    item on one side of each split. With `calibrate`, each layer's logit is
    rescaled (Platt: sigmoid(a * logit + c), fitted on its out-of-fold scores)
    so that served scores are probabilities, not saturated 0/1 flips; that is
    monotone, so AUROCs and the ranking are unchanged. The layer is picked by nested CV inside
    `layers` (declare a band before looking: `layer_band_declared=True` records
    it as such); the held-out AUROC reported is that of the whole procedure.
    """
    X = np.asarray(X, dtype=np.float32)
    y = _binary(y)
    check_name(name)
    if X.ndim != 3:
        raise ValueError(f"X must be (N, L, D), got shape {X.shape}")
    n, num_x_layers, hidden = X.shape
    if len(y) != n or len(groups) != n:
        raise ValueError(f"X has {n} examples, y {len(y)}, groups {len(groups)}")
    if sequences is not None and len(sequences) != n:
        raise ValueError(f"X has {n} rows, sequences {len(sequences)}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or Inf values")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    if position is not None and position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    if not isinstance(ema_window, int) or ema_window < 1:
        raise ValueError(f"ema_window must be a positive integer, got {ema_window!r}")
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    labels = [str(x) for x in labels]
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ValueError(f"labels must be two distinct names [negative, positive], got {labels}")
    layer_list = list(range(num_x_layers)) if layers is None else [int(l) for l in layers]
    if not layer_list or len(set(layer_list)) != len(layer_list) or not all(0 <= l < num_x_layers for l in layer_list):
        raise ValueError(f"layers must be distinct indices in [0, {num_x_layers}), got {layer_list}")
    if model is not None and (model.hidden_size != hidden or model.num_layers != num_x_layers):
        raise ValueError(
            f"X has {num_x_layers} layers of {hidden}, the model {model.num_layers} layers of {model.hidden_size}"
        )

    gid = group_ids(groups)
    splits = cv_splits(y, gid, folds, seed)
    rng = np.random.default_rng(seed)
    shuffles = [rng.permutation(y) for _ in range(n_shuffles)]
    weights_b = bootstrap_weights(gid, n_bootstrap, rng) if n_bootstrap > 0 else None

    per_layer, oofs, finals = [], [], []
    bar = None
    iterator = layer_list
    if progress:
        from tqdm import tqdm

        bar = iterator = tqdm(layer_list, desc=f"training {name}", unit="layer")
    for layer in iterator:
        with _few_blas_threads():
            per_layer_entry, oof, final = _train_layer(X[:, layer, :], y, layer, splits, shuffles, weights_b, method, C)
        per_layer.append(per_layer_entry)
        oofs.append(oof)
        finals.append(final)
    if bar is not None:
        bar.close()
    calibration = None
    if calibrate:
        calibration = []
        for k in range(len(layer_list)):
            a, c = platt_scaling(oofs[k], y)
            d = finals[k]
            finals[k] = LinearDetector(d.mean, d.scale, a * d.w, a * d.b + c)
            oofs[k] = _sigmoid(a * _logit(oofs[k]) + c)
            calibration.append({"layer": layer_list[k], "slope": a, "intercept": c})

    best_k = _best_index(per_layer)
    best_layer = layer_list[best_k]
    with _few_blas_threads():
        nested = nested_selection(X, y, gid, layer_list, splits, oofs, method, C, seed)
    held_out = nested["oof"]  # every row scored by a model whose layer and weights never saw its item
    threshold, achieved_fpr, tpr = threshold_at_fpr(y, held_out, fpr)
    auc_ci = bootstrap_ci(y, held_out, weights_b)[1] if weights_b is not None else [None, None]

    metadata = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "labels": labels,
        "method": method,
        "best_layer": best_layer,
        "aggregation": aggregation,
        "per_layer": per_layer,
        "selection": {
            "method": "nested_cv",
            "candidate_layers": layer_list,
            "band_declared_before_looking": bool(layer_band_declared),
            "inner_folds": INNER_FOLDS,
            "layers_chosen_per_fold": nested["chosen"],
            "auroc": _num(auroc(y, held_out)),
            "auroc_ci": auc_ci,
        },
        "auroc": _num(auroc(y, held_out)),
        "auroc_ci": auc_ci,
        "calibration": {"method": "platt", "per_layer": calibration} if calibration is not None else None,
        "threshold": threshold,
        "threshold_fpr": fpr,
        "threshold_fpr_achieved": achieved_fpr,
        "threshold_tpr": tpr,
        "model_id": getattr(model, "model_id", None),
        "model_fingerprint": getattr(model, "fingerprint", None),
        "hidden_size": hidden,
        "num_layers": getattr(model, "num_layers", num_x_layers),
        "dataset_hash": dataset_hash,
        "n_examples": n,
        "n_positive": int(y.sum()),
        "n_groups": int(gid.max()) + 1,
        "folds": folds,
        "C": C,
        "seed": seed,
        "n_bootstrap": n_bootstrap,
        "n_shuffles": n_shuffles,
        "created": utc_now(),
    }
    if position is not None:
        metadata["position"] = position
    if position == TOKEN:
        metadata.update(_token_thresholds(y, held_out, sequences, aggregation, ema_window, fpr, threshold))
    return Probe(
        name=name,
        layers=tuple(layer_list),
        weights=np.stack([d.w for d in finals]).astype(np.float32),
        bias=np.array([d.b for d in finals], dtype=np.float32),
        mean=np.stack([d.mean for d in finals]).astype(np.float32),
        scale=np.stack([d.scale for d in finals]).astype(np.float32),
        metadata=metadata,
    )


def platt_scaling(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, c) of sigmoid(a * logit(score) + c) fitted by 1-D logistic regression on held-out scores.

    The slope is kept in (0, PLATT_MAX_SLOPE]: a calibration may soften a
    detector, never sharpen it past its regularised fit nor turn it around.
    """
    from sklearn.linear_model import LogisticRegression

    z = _logit(scores).reshape(-1, 1)
    if len(np.unique(y)) < 2 or np.ptp(z) == 0:
        return 1.0, 0.0
    model = LogisticRegression(C=1e4, max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(z, y)
    a, c = float(model.coef_[0, 0]), float(model.intercept_[0])
    if a <= 0:  # no usable ranking: fall back to the base rate, flat
        return PLATT_MIN_SLOPE, float(np.log(np.mean(y) / (1 - np.mean(y))))
    if a > PLATT_MAX_SLOPE:  # never sharpen past the regularised fit: keep its slope, refit the offset only
        a = PLATT_MAX_SLOPE
        c = _fit_offset(a * z[:, 0], y, c)
    return a, c


def _fit_offset(z: np.ndarray, y: np.ndarray, start: float, steps: int = 50) -> float:
    """argmin over c of the log-loss of sigmoid(z + c) (Newton's method; the loss is convex in c)."""
    c = start
    for _ in range(steps):
        p = _sigmoid(z + c)
        grad, hess = float(np.sum(p - y)), float(np.sum(p * (1 - p)))
        if hess < 1e-12:
            break
        step = grad / hess
        c -= step
        if abs(step) < 1e-10:
            break
    return c


def nested_selection(X, y, gid, layer_list, splits, oofs, method, C, seed) -> dict:
    """Pick the layer inside each outer training set by inner CV; score the outer test fold with it.

    oofs[k] holds layer_list[k]'s outer out-of-fold scores, so only the inner
    fits are new. The result's "oof" is the honest held-out score of the
    whole procedure (layer choice included).
    """
    held_out = np.empty(len(y), dtype=np.float64)
    chosen = []
    for fold, (tr, te) in enumerate(splits):
        if len(layer_list) == 1:
            k = 0
        else:
            inner_folds = min(INNER_FOLDS, len(np.unique(gid[tr])))
            inner = cv_splits(y[tr], gid[tr], inner_folds, seed + 1 + fold) if inner_folds >= 2 else None
            if inner is None:
                k = 0
            else:
                quality = []
                for layer in layer_list:
                    inner_oof, _, _ = cross_validate(X[tr][:, layer, :], y[tr], inner, method, C)
                    quality.append(auroc(y[tr], inner_oof))
                k = int(np.nanargmax(quality)) if np.any(np.isfinite(quality)) else 0
        chosen.append(layer_list[k])
        held_out[te] = oofs[k][te]
    return {"oof": held_out, "chosen": chosen}


def _token_thresholds(y, held_out, sequences, aggregation, ema_window, fpr, token_threshold) -> dict:
    """Per-token threshold, and one per response aggregate, each at `fpr` on held-out negative responses."""
    neg = held_out[y == 0]
    out = {
        "token_threshold": token_threshold,
        "token_threshold_fpr_achieved": float(np.mean(neg >= token_threshold)),
        "ema_window": ema_window,
    }
    if sequences is None:
        return out
    seq = group_ids(sequences)
    per_seq_scores = [held_out[seq == s] for s in range(int(seq.max()) + 1)]
    per_seq_label = np.array([int(y[seq == s][0]) for s in range(int(seq.max()) + 1)])
    thresholds, aucs, achieved = {}, {}, {}
    for how in agg.RESPONSE_AGGREGATIONS:
        values = np.array([agg.aggregate(s, how, ema_window) for s in per_seq_scores])
        thresholds[how], achieved[how], _ = threshold_at_fpr(per_seq_label, values, fpr)
        aucs[how] = _num(auroc(per_seq_label, values))
    out["aggregate_thresholds"] = thresholds
    out["aggregate_auroc"] = aucs
    out["n_responses"] = len(per_seq_scores)
    # `threshold` is what `score` (the declared aggregate) is compared with
    if aggregation in thresholds:
        out["threshold"] = thresholds[aggregation]
        out["threshold_fpr_achieved"] = achieved[aggregation]
    return out


def _train_layer(Xl, y, layer, splits, shuffles, weights_b, method, C) -> tuple[dict, np.ndarray, LinearDetector]:
    """One layer: CV quality, shuffled-label baseline, bootstrap intervals, and the detector refit on all data."""
    oof, accs, aucs = cross_validate(Xl, y, splits, method, C)
    shuffled_acc, shuffled_auc = [], []
    for y_perm in shuffles:
        _, s_acc, s_auc = cross_validate(Xl, y_perm, splits, method, C)
        shuffled_acc.append(np.mean(s_acc))
        shuffled_auc.append(_nanmean(s_auc))
    acc_ci, auc_ci = bootstrap_ci(y, oof, weights_b) if weights_b is not None else ([None, None], [None, None])
    entry = {
        "layer": layer,
        "accuracy_mean": _num(np.mean(accs)),
        "accuracy_std": _num(np.std(accs)),
        "auroc_mean": _num(_nanmean(aucs)),
        "auroc_std": _num(_nanstd(aucs)),
        "shuffled_accuracy_mean": _num(np.mean(shuffled_acc)) if shuffles else None,
        "shuffled_auroc_mean": _num(_nanmean(np.array(shuffled_auc))) if shuffles else None,
        "accuracy_ci": acc_ci,
        "auroc_ci": auc_ci,
    }
    return entry, oof, fit_detector(Xl, y, method, C)


def threshold_at_fpr(y: np.ndarray, scores: np.ndarray, fpr: float) -> tuple[float, float, float]:
    """(threshold, achieved FPR, TPR): the (1 - fpr) quantile of the negatives' scores; flag when score >= it."""
    neg, pos = scores[y == 0], scores[y == 1]
    threshold = float(np.clip(np.quantile(neg, 1 - fpr), 0.0, 1.0))
    return threshold, float(np.mean(neg >= threshold)), float(np.mean(pos >= threshold)) if len(pos) else 0.0


def _best_index(per_layer: list[dict]) -> int:
    """Highest mean CV AUROC; ties broken by accuracy, then by the earlier layer."""

    def key(k):
        e = per_layer[k]
        auc = e["auroc_mean"] if e["auroc_mean"] is not None else -math.inf
        acc = e["accuracy_mean"] if e["accuracy_mean"] is not None else -math.inf
        return (auc, acc, -k)

    return max(range(len(per_layer)), key=key)


# -- labelled data ----------------------------------------------------------------------------


def read_labelled(
    path: str | Path, text_field: str = "text", label_field: str = "label", group_field: str = "group"
) -> list[dict]:
    """Rows of a labelled JSONL file: {"text" or "messages", "label", "group", "line"}.

    A row without a group is its own group. Errors name the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled data file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line, parse_constant=_reject_constant)
            except ValueError as exc:
                raise ValueError(f"{where}: invalid JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: each line must be a JSON object")
            row: dict = {"line": lineno}
            if "messages" in obj and text_field not in obj:
                row["messages"] = _check_messages(obj["messages"], where)
            elif isinstance(obj.get(text_field), str) and obj[text_field]:
                row["text"] = obj[text_field]
            else:
                raise ValueError(f"{where}: needs a non-empty string {text_field!r} or a 'messages' list")
            if label_field not in obj:
                raise ValueError(f"{where}: missing {label_field!r}")
            label = obj[label_field]
            if isinstance(label, bool):
                label = int(label)
            if not isinstance(label, (int, str)) or (isinstance(label, int) and label not in (0, 1)):
                raise ValueError(f"{where}: {label_field!r} must be 0, 1 or a string, got {label!r}")
            row["label"] = label
            group = obj.get(group_field, f"line-{lineno}")
            if isinstance(group, (list, dict)):
                group = json.dumps(group, sort_keys=True)
            row["group"] = group
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


def binary_labels(values: Sequence, positive_label=None, *, source: str = "data") -> tuple[np.ndarray, list[str]]:
    """0/1 targets and [negative, positive] names from 0/1 labels or two distinct strings.

    With string labels and no positive_label, the later one in sorted order is
    the positive class (so the choice never depends on row order).
    """
    values = list(values)
    kinds = {type(v) for v in values}
    if kinds <= {int}:
        if positive_label is None:
            positive = 1
        elif str(positive_label) in ("0", "1"):
            positive = int(str(positive_label))
        else:
            raise ValueError(f"{source}: labels are 0/1, so the positive label must be 0 or 1, got {positive_label!r}")
        y = np.array([1 if v == positive else 0 for v in values], dtype=np.int64)
        names = ["negative", "positive"]
    elif kinds <= {str}:
        distinct = sorted(set(values))
        if len(distinct) != 2:
            raise ValueError(f"{source}: string labels must take exactly two values, found {distinct[:10]}")
        if positive_label is None:
            positive = distinct[1]
        elif positive_label in distinct:
            positive = positive_label
        else:
            raise ValueError(f"{source}: positive label {positive_label!r} is not one of {distinct}")
        negative = distinct[0] if positive == distinct[1] else distinct[1]
        y = np.array([1 if v == positive else 0 for v in values], dtype=np.int64)
        names = [negative, positive]
    else:
        raise ValueError(f"{source}: labels mix numbers and strings")
    if y.min() == y.max():
        raise ValueError(f"{source}: every example has the same label; a probe needs both classes")
    return y, names


def row_tokens(lm, row: dict, chat: bool = False) -> list[int]:
    """Token ids of one labelled row: chat-templated messages, or text (as a user turn if chat)."""
    from mlx_interp.steering.capture import encode
    from mlx_interp.steering.chat_template import render_chat

    if "messages" not in row:
        return encode(lm, row["text"], chat=chat)
    return render_chat(lm.tokenizer, row["messages"])  # exactly what the server renders for these messages


def train_probe_from_jsonl(
    lm,
    path: str | Path,
    name: str,
    *,
    positive_label=None,
    position: str = "answer_end",
    text_field: str = "text",
    label_field: str = "label",
    group_field: str = "group",
    chat: bool = False,
    progress: bool = False,
    layers: Sequence[int] | None = None,
    **train_kwargs,
) -> Probe:
    """Capture lm's residual stream for each labelled row at `position` and train there.

    `token` trains on every token of each row's answer (all labelled as the
    row is), grouped by the row's group for CV, with each row a response for
    the aggregate thresholds.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {', '.join(POSITIONS)}, got {position!r}")
    check_name(name)
    rows = read_labelled(path, text_field=text_field, label_field=label_field, group_field=group_field)
    y_rows, names = binary_labels([r["label"] for r in rows], positive_label, source=str(path))
    spans = [example_spans(lm, r, chat=chat) for r in rows]
    X, owner = capture_at(lm, spans, position, layers=layers, progress=progress)
    return train_probe(
        X,
        y_rows[owner],
        [rows[i]["group"] for i in owner],
        name,
        labels=names,
        model=lm,
        dataset_hash=files_hash([path]),
        progress=progress,
        position=position,
        sequences=owner.tolist() if position == TOKEN else None,
        layers=layers,
        **train_kwargs,
    )


# -- small helpers ----------------------------------------------------------------------------


def _binary(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.all(np.isin(y, (0, 1))):
        raise ValueError("y must be a 1-D array of 0/1 labels")
    y = y.astype(np.int64)
    if y.min() == y.max():
        raise ValueError("y has only one class; a probe needs both")
    return y


def _check_messages(messages, where: str) -> list[dict]:
    ok = isinstance(messages, list) and messages and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    )
    if not ok:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{'role': str, 'content': str}}")
    return messages


def _reject_constant(token: str):
    raise ValueError(f"{token} is not valid JSON")


def _few_blas_threads():
    """Limit BLAS threads for the many small fits (threadpoolctl ships with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on it
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(BLAS_THREADS)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -500, 500)))


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.mean(a[np.isfinite(a)])) if np.any(np.isfinite(a)) else float("nan")


def _nanstd(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.std(a[np.isfinite(a)])) if np.any(np.isfinite(a)) else float("nan")


def _num(x) -> float | None:
    return json_safe_float(x)
