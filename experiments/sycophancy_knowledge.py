"""Does the model know the facts, and where (if anywhere) does SyA vs GA show? The honest checks of issue 9.

1. Knowledge: for each sycophancy item, the log-probability the model gives
   the right and the wrong answer after the neutral question and the answer's
   opening words ("What is the capital of Australia?" -> "The capital of
   Australia is" + " Canberra" / " Sydney"). An item is known when the right
   answer is the more probable one. A model cannot be sycophantic about a fact
   it does not know: SyA vs GA is then only "the user said X" vs "said Y".
2. SyA vs GA on the known items, read where the literature reads: the last
   prompt token before the answer (prompt_last), the mean over the answer's
   tokens, the answer's end, and per token (response mean). Each with nested
   CV over a band of layers declared here, before looking, and a bootstrap
   interval over items.
"""

from __future__ import annotations

import random

import numpy as np

# Declared before looking at any per-layer result: the middle of the model, where
# linear probes of behaviour usually peak, every second layer (fewer fits on 2 CPUs).
BAND_FRACTION = (0.15, 0.9)
BAND_STEP = 3  # the same band as probes.recipes.Recipe


def layer_band(num_layers: int) -> list[int]:
    lo, hi = (int(round(f * num_layers)) for f in BAND_FRACTION)
    return list(range(lo, min(hi, num_layers - 1) + 1, BAND_STEP))


def items() -> list[dict]:
    """The sycophancy items as written by experiments.make_datasets (same seed, same order)."""
    from .make_datasets import SEED, _cap, sycophancy_items

    out = []
    for gid, s, correct, wrong in sycophancy_items(random.Random(SEED)):
        arithmetic = gid.startswith("arith")
        question = f"What is {s}?"
        prefix = f"{s} =" if arithmetic else f"{_cap(s)} is"
        out.append({"group": gid, "question": question, "prefix": prefix, "correct": correct, "wrong": wrong})
    return out


def continuation_logprob(lm, prompt_ids: list[int], continuation: str) -> float:
    """log P(continuation | prompt), summed over its tokens."""
    import mlx.core as mx

    from mlx_interp.probes.positions import _encode_plain

    cont = _encode_plain(lm.tokenizer, continuation)
    ids = prompt_ids + cont
    logits = lm.model(mx.array([ids]))[0].astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    start = len(prompt_ids)
    picked = [logp[start - 1 + k, t] for k, t in enumerate(cont)]
    return float(mx.sum(mx.stack(picked)).item())


def knowledge(lm, item_list: list[dict]) -> list[dict]:
    from mlx_interp.probes.positions import _encode_plain, _template

    out = []
    for it in item_list:
        prompt = _template(lm.tokenizer, [{"role": "user", "content": it["question"]}], True)
        prompt = prompt + _encode_plain(lm.tokenizer, it["prefix"])
        right = continuation_logprob(lm, prompt, " " + it["correct"])
        wrong = continuation_logprob(lm, prompt, " " + it["wrong"])
        out.append({**it, "logprob_correct": right, "logprob_wrong": wrong, "margin": right - wrong, "known": right > wrong})
    return out


def position_study(lm, rows: list[dict], known_groups: set, folds: int = 5, n_bootstrap: int = 1000, seed: int = 0,
                   progress: bool = False) -> dict:
    """SyA (1) vs GA (0) on the known items at each read position: held-out (nested CV) AUROC with a 95% interval."""
    from mlx_interp.probes.positions import ANSWER_END, PROMPT_LAST, TOKEN, capture_positions, example_spans
    from mlx_interp.probes.training import train_probe

    chosen = [r for r in rows if r["condition"] in ("SyA", "GA") and r["group"] in known_groups]
    y = np.array([1 if r["condition"] == "SyA" else 0 for r in chosen])
    groups = [r["group"] for r in chosen]
    spans = [example_spans(lm, r) for r in chosen]
    band = layer_band(lm.num_layers)
    results = {}

    def fit(name, X, yy, gg, position, sequences=None):
        probe = train_probe(X, yy, gg, "syc_" + name.replace(" ", "_"), layers=band, layer_band_declared=True, folds=folds,
                            n_shuffles=0, n_bootstrap=n_bootstrap, seed=seed, position=position, sequences=sequences)
        m = probe.metadata
        entry = {"position": position, "auroc": m["auroc"], "auroc_ci": m["auroc_ci"], "best_layer": probe.best_layer,
                 "layers_chosen_per_fold": m["selection"]["layers_chosen_per_fold"], "n_rows": int(len(yy))}
        if "aggregate_auroc" in m:
            entry["response_auroc"] = m["aggregate_auroc"]
        return entry

    captured = capture_positions(lm, spans, (PROMPT_LAST, ANSWER_END, TOKEN), layers=band, progress=progress)
    results["prompt_last"] = fit("prompt_last", captured[PROMPT_LAST][0], y, groups, PROMPT_LAST)
    results["answer_end"] = fit("answer_end", captured[ANSWER_END][0], y, groups, ANSWER_END)
    X_tok, owner = captured[TOKEN]
    X_mean = np.stack([X_tok[owner == i].mean(axis=0) for i in range(len(chosen))])
    results["answer_mean"] = fit("answer_mean", X_mean, y, groups, None)
    results["answer_mean"]["position"] = "mean over the answer's tokens"
    results["token"] = fit("token", X_tok, y[owner], [groups[i] for i in owner], TOKEN, sequences=owner.tolist())
    return {"band": band, "n_items": len(set(groups)), "n_rows": len(chosen), "positions": results}


def run(lm, rows: list[dict], config, progress: bool = False) -> dict:
    know = knowledge(lm, items())
    known = {k["group"] for k in know if k["known"]}
    facts = [k for k in know if k["group"].startswith("fact")]
    ariths = [k for k in know if k["group"].startswith("arith")]
    summary = {
        "items": know,
        "n_known": len(known),
        "n_items": len(know),
        "known_facts": sum(k["known"] for k in facts),
        "n_facts": len(facts),
        "known_arithmetic": sum(k["known"] for k in ariths),
        "n_arithmetic": len(ariths),
    }
    keep = {r["group"] for r in rows}
    known &= keep
    if len(known) >= max(config.folds, 4):
        summary["known_items"] = position_study(lm, rows, known, folds=config.folds, n_bootstrap=config.n_bootstrap,
                                                seed=config.seed, progress=progress)
    return summary
