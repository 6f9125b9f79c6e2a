"""Build steering vectors from contrastive prompt pairs.

Input: JSONL, one pair per line, {"positive": ..., "negative": ...} with an
optional "group" and an optional "chat" (true: the text is a user turn in the
model's chat template; false: raw text; absent: the caller's choice).

Convention: the direction points from the negative side to the positive side,
so adding it with alpha > 0 moves the model toward the positive prompts.

Methods, per layer, on the paired differences d_i = h(positive_i) - h(negative_i):
  mean_diff  mean of d_i
  pca        first principal component of the d_i (uncentred: the shared shift
             is the signal, centring would remove it), sign-aligned with the
             mean difference and scaled to the mean difference's projection on
             it, so alpha means the same thing for both methods.

Layer choice: each layer gets a held-out separation score. For pair i the
direction is re-estimated without it (mean of the other differences) and the
pair's own difference is projected onto that unit direction; the score is the
mean of these held-out gaps over their standard deviation (an effect size
that in-sample fitting cannot inflate). The recommended layers are a
contiguous band around the best layer in the middle of the network (40-70% of
depth, so never the first or last 10%; see MIDDLE_START for why).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .artifacts import check_name, dataset_hash
from .interventions import AlphaUnit
from .vectors import SteeringVector, build_metadata

METHODS = ("mean_diff", "pca")
POSITIONS = ("last", "mean")
EDGE_FRACTION = 0.10  # layers at either end never recommended: embedding- and unembedding-shaped
# The band is looked for in the middle of the network only. Separation scores are highest in the
# first layers, where the pairs differ by their literal tokens, but adding there steers little;
# late layers are shaped for the next token and adding there breaks fluency. Measured on
# SmolLM2-135M (30 layers), red/blue pairs, greedy, same total shift: best raw score at layers 2-5
# and steering there changed nothing about colour; 8-13 and 10-15 changed the text but not toward
# red; 12-17 gave "The vibrant red hue of this enchanted flower"; 14-19 and 17-21 looped or broke.
# One model and two concepts: a prior, not a law; `layers=` overrides it per request.
MIDDLE_START, MIDDLE_END = 0.40, 0.70
BAND_FRACTION = 0.2  # at most this share of the layers in the recommended band
BAND_KEEP = 0.25  # neighbours stay in the band while their score is at least this share of the best
# default_alpha before calibration, in the vector's unit (class_mean_total, steering/interventions.py):
# alpha 1 moves a typical negative-side state as far as a typical positive-side one.
# `mlx-interp vectors calibrate` replaces it with the measured recommendation.
UNCALIBRATED_ALPHA = 1.0
MIN_PAIRS = 2
MAX_TEXT_CHARS = 20_000


# -- reading pairs ---------------------------------------------------------------


def read_pairs(path: str | Path) -> list[dict]:
    """Pairs from a JSONL file; ValueError naming the file and line for anything malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"pairs file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: invalid JSON ({exc})") from None
        pairs.append(check_pair(item, f"{path}:{lineno}"))
    if not pairs:
        raise ValueError(f"{path}: no pairs (expected JSON lines like {{\"positive\": \"...\", \"negative\": \"...\"}})")
    return pairs


def _reject_constant(token: str):
    raise ValueError(f"{token} is not valid JSON")


def check_pair(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: each line must be a JSON object with 'positive' and 'negative'")
    unknown = set(item) - {"positive", "negative", "group", "chat"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: positive, negative, group, chat")
    pair = {}
    for side in ("positive", "negative"):
        value = item.get(side)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: '{side}' must be a non-empty string")
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"{where}: '{side}' has {len(value)} characters, more than {MAX_TEXT_CHARS}")
        pair[side] = value
    if "group" in item:
        if not isinstance(item["group"], (str, int)) or isinstance(item["group"], bool):
            raise ValueError(f"{where}: 'group' must be a string or an integer")
        pair["group"] = item["group"]
    if "chat" in item:
        if not isinstance(item["chat"], bool):
            raise ValueError(f"{where}: 'chat' must be true or false")
        pair["chat"] = item["chat"]
    return pair


def pairs_hash(pairs: Sequence[dict]) -> str:
    """sha256 of the pairs' canonical JSON (for pairs that did not come from a file)."""
    canonical = "\n".join(json.dumps(p, sort_keys=True, ensure_ascii=False) for p in pairs)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- the statistics (pure numpy, testable without a model) -----------------------------


def mean_difference(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(n, L, D), (n, L, D) -> (L, D)."""
    return (pos - neg).mean(axis=0)


def pca_direction(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """First principal component of the paired differences per layer, in mean-difference units: (L, D)."""
    diffs = (pos - neg).astype(np.float64)  # (n, L, D)
    mean = diffs.mean(axis=0)
    out = np.zeros(mean.shape, dtype=np.float64)
    for layer in range(diffs.shape[1]):
        _, _, vt = np.linalg.svd(diffs[:, layer, :], full_matrices=False)
        pc = vt[0]
        projection = float(mean[layer] @ pc)
        if projection < 0:
            pc, projection = -pc, -projection
        out[layer] = pc * projection
    return out


def heldout_separation(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer (effect size, sign accuracy) of held-out paired gaps; see the module docstring.

    Needs at least two pairs. Effect size is mean/std of the gaps (0 when they
    have no spread and no mean); accuracy is the share of pairs whose gap is positive.
    """
    diffs = (pos - neg).astype(np.float64)  # (n, L, D)
    n = diffs.shape[0]
    if n < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} pairs to score layers, got {n}")
    total = diffs.sum(axis=0)  # (L, D)
    heldout = (total[None] - diffs) / (n - 1)  # direction without pair i: (n, L, D)
    norms = np.linalg.norm(heldout, axis=2)  # (n, L)
    gaps = np.einsum("nld,nld->nl", diffs, heldout) / np.maximum(norms, 1e-12)  # (n, L)
    mean = gaps.mean(axis=0)
    std = gaps.std(axis=0, ddof=1)
    scale = np.maximum(std, 1e-6 * np.maximum(np.abs(mean), 1e-12))
    effect = np.where(np.abs(mean) > 0, mean / scale, 0.0)
    accuracy = (gaps > 0).mean(axis=0)
    return effect, accuracy


def projections_cohens_d(pos: np.ndarray, neg: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """In-sample Cohen's d of positive vs negative projections on each layer's direction: (L,)."""
    units = directions / np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    p = np.einsum("nld,ld->nl", pos.astype(np.float64), units)
    q = np.einsum("nld,ld->nl", neg.astype(np.float64), units)
    pooled = np.sqrt((p.var(axis=0, ddof=1) + q.var(axis=0, ddof=1)) / 2)
    return (p.mean(axis=0) - q.mean(axis=0)) / np.maximum(pooled, 1e-12)


def eligible_layers(num_layers: int) -> range:
    """Layers a recommendation may use: the middle of the network (MIDDLE_START to MIDDLE_END of depth).

    Never the first or last EDGE_FRACTION; at least one layer.
    """
    if num_layers <= 2:
        return range(num_layers)
    edge = max(1, math.ceil(EDGE_FRACTION * num_layers))
    lo = max(edge, math.floor(MIDDLE_START * num_layers))
    hi = min(num_layers - edge, math.ceil(MIDDLE_END * num_layers))
    if hi <= lo:
        middle = num_layers // 2
        return range(middle, middle + 1)
    return range(lo, hi)


def recommend_layers(scores: np.ndarray) -> tuple[int, ...]:
    """A contiguous band around the best-scoring eligible layer (see the module docstring)."""
    L = len(scores)
    allowed = eligible_layers(L)
    best = max(allowed, key=lambda l: scores[l])
    width = max(1, round(BAND_FRACTION * L))
    threshold = BAND_KEEP * scores[best] if scores[best] > 0 else scores[best]
    lo = hi = best
    while hi - lo + 1 < width:
        left = lo - 1 if lo - 1 in allowed and scores[lo - 1] >= threshold else None
        right = hi + 1 if hi + 1 in allowed and scores[hi + 1] >= threshold else None
        if left is None and right is None:
            break
        # grow toward the stronger neighbour
        if right is None or (left is not None and scores[left] > scores[right]):
            lo = left
        else:
            hi = right
    return tuple(range(lo, hi + 1))


def midpoints_for(pos: np.ndarray, neg: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Projection of the centre of the two classes on each unit direction: (L,)."""
    centre = (pos.astype(np.float64).mean(axis=0) + neg.astype(np.float64).mean(axis=0)) / 2
    units = directions / np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-12)
    return np.einsum("ld,ld->l", centre, units)


# -- capture and build --------------------------------------------------------------------


def capture_pairs(lm, pairs: Sequence[dict], position: str = "last", chat: bool = True, progress: bool = False):
    """(positive states, negative states), each (n, L, D) float32, in pair order."""
    from .capture import capture_hidden_states

    if position not in POSITIONS:
        raise ValueError(f"position {position!r} is not one of {', '.join(POSITIONS)}")
    n = len(pairs)
    out = np.zeros((2 * n, lm.num_layers, lm.hidden_size), dtype=np.float32)
    by_chat: dict[bool, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_chat.setdefault(bool(pair.get("chat", chat)), []).append(i)
    for use_chat, idx in by_chat.items():
        texts = [pairs[i]["positive"] for i in idx] + [pairs[i]["negative"] for i in idx]
        states = capture_hidden_states(lm, texts, position=position, chat=use_chat, progress=progress)
        out[idx] = states[: len(idx)]
        out[[n + i for i in idx]] = states[len(idx) :]
    return out[:n], out[n:]


def build_vector(
    lm,
    pairs: Sequence[dict],
    name: str,
    method: str = "mean_diff",
    position: str = "last",
    chat: bool = True,
    description: str = "",
    progress: bool = False,
    dataset_paths: Iterable[str | Path] | None = None,
) -> SteeringVector:
    """Capture the pairs on lm and turn them into a SteeringVector (not saved)."""
    check_name(name)
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    pairs = [check_pair(p, f"pair {i}") for i, p in enumerate(pairs)]
    if len(pairs) < MIN_PAIRS:
        raise ValueError(f"need at least {MIN_PAIRS} pairs to build a vector, got {len(pairs)}")
    pos, neg = capture_pairs(lm, pairs, position=position, chat=chat, progress=progress)
    return vector_from_states(
        pos,
        neg,
        name,
        method=method,
        description=description,
        model_id=lm.model_id,
        model_fingerprint=lm.fingerprint,
        dataset_hash=dataset_hash(dataset_paths) if dataset_paths else pairs_hash(pairs),
        extra={"position": position, "chat": chat, "num_pairs": len(pairs), "groups": _group_count(pairs)},
    )


def vector_from_states(
    pos: np.ndarray,
    neg: np.ndarray,
    name: str,
    method: str = "mean_diff",
    description: str = "",
    model_id: str | None = None,
    model_fingerprint: str | None = None,
    dataset_hash: str | None = None,
    extra: dict | None = None,
) -> SteeringVector:
    """The vector for captured paired states pos/neg (n, L, D)."""
    if pos.shape != neg.shape or pos.ndim != 3:
        raise ValueError(f"positive and negative states must both be (pairs, layers, hidden), got {pos.shape} and {neg.shape}")
    n, L, D = pos.shape
    directions = mean_difference(pos, neg) if method == "mean_diff" else pca_direction(pos, neg)
    directions = directions.astype(np.float32)
    separation, accuracy = heldout_separation(pos, neg)
    layers = recommend_layers(separation)
    norms = np.linalg.norm(np.concatenate([pos, neg]).astype(np.float64), axis=2).mean(axis=0)
    midpoints = midpoints_for(pos, neg, directions).astype(np.float32)
    stats = {
        "separation": separation,
        "heldout_sign_accuracy": accuracy,
        "cohens_d": projections_cohens_d(pos, neg, directions),
        "direction_norms": np.linalg.norm(directions, axis=1),
        "separation_metric": "held-out paired gap effect size (mean/std over leave-one-pair-out)",
    }
    metadata = build_metadata(
        name,
        hidden_size=D,
        num_layers=L,
        method=method,
        recommended_layers=layers,
        layer_norms=norms,
        default_alpha=UNCALIBRATED_ALPHA,
        alpha_unit=AlphaUnit.TOTAL,
        model_id=model_id,
        model_fingerprint=model_fingerprint,
        description=description,
        dataset_hash=dataset_hash,
        extra={**(extra or {}), **stats},
    )
    return SteeringVector(name=name, directions=directions, metadata=metadata, midpoints=midpoints)


def _group_count(pairs: Sequence[dict]) -> int | None:
    groups = {p["group"] for p in pairs if "group" in p}
    return len(groups) or None
