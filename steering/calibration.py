"""Calibrate a steering vector: how far can alpha go before the text stops being language?

For each alpha in a sweep the vector steers greedy generations from a few
prompts. Coherence is the log-probability of the steered text under the
*unsteered* model, per token: a steered answer that is still English ("The
answer is red.") costs a few nats against the unsteered one; word salad costs
far more. Beside it, the KL from the unsteered to the steered next-token
distribution at the end of the prompt says how hard the push is.

A steered text is coherent when its mean token log-probability under the
unsteered model is at least COHERENT_LOGPROB, or it costs at most
MAX_LOGPROB_DROP nats per token more than the unsteered text. The floor is what
matters on most prompts: an unsteered answer that parrots the prompt scores
about -0.4 nats/token, so any change of topic costs more than 2.5 even when it
reads well. The coherent range is the span of swept alphas, contiguous from 0
on each side, whose texts are coherent. The recommended alpha is the
strongest coherent push toward the vector's positive side. Both are stored in the vector's metadata
(`calibrated: true`, `calibration: {...}`), and default_alpha becomes the
recommendation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .artifacts import utc_now
from .vectors import SteeringVector

# Neutral prompts, none about the vector's concept: calibration measures fluency, not the concept.
CALIBRATION_PROMPTS = (
    "Tell me about your favourite place in one or two sentences.",
    "What colour is fresh grass? Answer in a short sentence.",
)
DEFAULT_ALPHAS = (-3.0, -2.0, -1.5, -1.0, 1.0, 1.5, 2.0, 3.0)
DEFAULT_MAX_TOKENS = 12
# Thresholds, set from the first sweep of green_red on SmolLM2-135M (docs/steering.md), where
# readable steered texts ("I am a wildlife conservation expert, which is my", 'The answer will be:
# "Red"') scored -2.8 to -3.3 nats/token under the unsteered model and loops or word salad
# ("The Red: She's the Red: She", "I am, which is,") -4.2 and below.
COHERENT_LOGPROB = -3.5  # nats per token (perplexity about 33) under the unsteered model
MAX_LOGPROB_DROP = 2.5  # or at most this much below the unsteered text's own


@dataclass
class SweepPoint:
    alpha: float
    logprob_per_token: float  # mean over prompts of the steered text's mean token log-probability, unsteered model
    logprob_drop: float  # unsteered text's value minus this one (nats per token; larger is worse)
    kl_first_token: float  # mean KL(unsteered || steered) of the next-token distribution at the prompt's end
    coherent: bool
    sample: str  # the first prompt's steered text


@dataclass
class Calibration:
    coherent_range: tuple[float, float]
    recommended_alpha: float
    sweep: list[SweepPoint] = field(default_factory=list)
    baseline_logprob_per_token: float = 0.0
    layers: tuple[int, ...] = ()
    prompts: tuple[str, ...] = ()
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_logprob_drop: float = MAX_LOGPROB_DROP
    coherent_logprob: float = COHERENT_LOGPROB

    def metadata(self, model_fingerprint: str | None) -> dict:
        return {
            "coherent_range": [float(self.coherent_range[0]), float(self.coherent_range[1])],
            "recommended_alpha": float(self.recommended_alpha),
            "metric": "mean token log-probability of the greedy steered text under the unsteered model",
            "coherent_if": "logprob_per_token >= coherent_logprob or logprob_drop <= max_logprob_drop",
            "coherent_logprob": self.coherent_logprob,
            "max_logprob_drop": self.max_logprob_drop,
            "baseline_logprob_per_token": round(self.baseline_logprob_per_token, 4),
            "layers": list(self.layers),
            "max_tokens": self.max_tokens,
            "prompts_sha256": hashlib.sha256(json.dumps(list(self.prompts)).encode()).hexdigest(),
            "num_prompts": len(self.prompts),
            "model_fingerprint": model_fingerprint,
            "created": utc_now(),
            "sweep": [
                {
                    "alpha": p.alpha,
                    "logprob_per_token": round(p.logprob_per_token, 4),
                    "logprob_drop": round(p.logprob_drop, 4),
                    "kl_first_token": round(p.kl_first_token, 4),
                    "coherent": p.coherent,
                    "sample": p.sample,
                }
                for p in self.sweep
            ],
        }


def continuation_logprobs(lm, prompt_ids: Sequence[int], completion_ids: Sequence[int]):
    """(log-probabilities of each completion token, log-softmax at the prompt's last token), unsteered."""
    import mlx.core as mx

    ids = list(prompt_ids) + list(completion_ids)
    logits = lm.model(mx.array([ids]))[0].astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    start = len(prompt_ids) - 1
    first = np.array(logp[start])
    if not completion_ids:
        return np.zeros(0), first
    rows = logp[start : start + len(completion_ids)]
    picked = mx.take_along_axis(rows, mx.array(list(completion_ids))[:, None], axis=-1)[:, 0]
    return np.array(picked), first


def _steered_greedy(lm, prompts_ids, interventions, max_tokens):
    """Greedy continuations, one row per (prompt, interventions), batched; also each row's first log-softmax."""
    import mlx.core as mx

    from .generation import steering_session

    eos = set(lm.tokenizer.eos_token_ids)
    outputs = [[] for _ in prompts_ids]
    firsts = []
    with steering_session(lm, capture_layers=()) as batch:
        pending = []
        for i, (ids, ivs) in enumerate(zip(prompts_ids, interventions)):
            pre = batch.prefill(ids, ivs)
            batch.add(i, pre, ivs)
            logits = pre.logits.astype(mx.float32)
            firsts.append(np.array(logits - mx.logsumexp(logits)))
            pending.append(pre.logits)
        logits = mx.stack(pending)
        for _ in range(max_tokens):
            toks = mx.argmax(logits, axis=-1).tolist()
            live = []
            for uid, tok in zip(batch.uids, toks):
                if tok not in eos:
                    outputs[uid].append(tok)
                    if len(outputs[uid]) < max_tokens:
                        live.append((uid, tok))
            batch.remove(set(batch.uids) - {uid for uid, _ in live})
            if not live:
                break
            logits, _ = batch.step([tok for _, tok in live], capture=False)
    return outputs, firsts


def is_coherent(logprob_per_token: float, logprob_drop: float, coherent_logprob: float = COHERENT_LOGPROB,
                max_logprob_drop: float = MAX_LOGPROB_DROP) -> bool:
    """The coherence rule (module docstring): above the floor, or close to the unsteered text."""
    return logprob_per_token >= coherent_logprob or logprob_drop <= max_logprob_drop


def _kl(p_log: np.ndarray, q_log: np.ndarray) -> float:
    return float(np.sum(np.exp(p_log) * (p_log - q_log)))


def coherent_span(points: Sequence[SweepPoint]) -> tuple[float, float]:
    """Swept alphas coherent contiguously from 0, on each side: (lowest, highest); 0 where none is."""
    low = high = 0.0
    for p in sorted((p for p in points if p.alpha > 0), key=lambda p: p.alpha):
        if not p.coherent:
            break
        high = p.alpha
    for p in sorted((p for p in points if p.alpha < 0), key=lambda p: -p.alpha):
        if not p.coherent:
            break
        low = p.alpha
    return low, high


def calibrate(
    lm,
    vector: SteeringVector,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    prompts: Sequence[str] = CALIBRATION_PROMPTS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    layers=None,
    max_logprob_drop: float = MAX_LOGPROB_DROP,
    coherent_logprob: float = COHERENT_LOGPROB,
    progress=None,
) -> Calibration:
    """Sweep alpha (add, the vector's unit) over `prompts` and measure coherence; see the module docstring."""
    from .capture import encode

    alphas = sorted({float(a) for a in alphas if a != 0})
    if not alphas:
        raise ValueError("calibration needs at least one non-zero alpha")
    if not prompts:
        raise ValueError("calibration needs at least one prompt")
    encoded = [encode(lm, p, chat=True) for p in prompts]
    sweep = [0.0] + alphas
    rows_ids, rows_ivs, rows_alpha = [], [], []
    for alpha in sweep:
        ivs = () if alpha == 0 else (vector.intervention(alpha=alpha, op="add", layers=layers),)
        for ids in encoded:
            rows_ids.append(ids)
            rows_ivs.append(ivs)
            rows_alpha.append(alpha)
    texts, firsts = _steered_greedy(lm, rows_ids, rows_ivs, max_tokens)
    per_alpha: dict[float, list[tuple[float, float, str]]] = {a: [] for a in sweep}
    for ids, toks, first, alpha in zip(rows_ids, texts, firsts, rows_alpha):
        token_lp, unsteered_first = continuation_logprobs(lm, ids, toks)
        mean_lp = float(token_lp.mean()) if len(token_lp) else 0.0
        per_alpha[alpha].append((mean_lp, _kl(unsteered_first, first), lm.tokenizer.decode(toks)))
        if progress:
            progress(alpha)
    baseline = float(np.mean([lp for lp, _, _ in per_alpha[0.0]]))
    points = []
    for alpha in alphas:
        lp = float(np.mean([x[0] for x in per_alpha[alpha]]))
        drop = baseline - lp
        points.append(
            SweepPoint(
                alpha=alpha,
                logprob_per_token=lp,
                logprob_drop=drop,
                kl_first_token=float(np.mean([x[1] for x in per_alpha[alpha]])),
                coherent=is_coherent(lp, drop, coherent_logprob, max_logprob_drop),
                sample=per_alpha[alpha][0][2],
            )
        )
    span = coherent_span(points)
    chosen = vector.recommended_layers if layers is None else vector.intervention(alpha=1.0, layers=layers).layers
    return Calibration(
        coherent_range=span,
        recommended_alpha=span[1],
        sweep=points,
        baseline_logprob_per_token=baseline,
        layers=tuple(chosen),
        prompts=tuple(prompts),
        max_tokens=max_tokens,
        max_logprob_drop=max_logprob_drop,
        coherent_logprob=coherent_logprob,
    )


def apply_calibration(vector: SteeringVector, result: Calibration, model_fingerprint: str | None) -> SteeringVector:
    """The vector with calibrated: true, the calibration record, and default_alpha = the recommendation."""
    meta = dict(vector.metadata)
    meta["calibrated"] = True
    meta["calibration"] = result.metadata(model_fingerprint)
    if result.recommended_alpha > 0:
        meta["default_alpha"] = float(result.recommended_alpha)
    return SteeringVector(name=vector.name, directions=vector.directions, metadata=meta, midpoints=vector.midpoints)
