"""exp8: can any setting of the existing ops make SmolLM2-135M answer "green" for red things?

Reuses experiments/colour_swap.py's questions, prompt (system prompt + "The answer is"),
greedy decoding (max_tokens from ColourConfig), first_colour scoring and the shipped vector
(experiments.artifacts.vector_for, as colour_swap's CLI does). Coherence is the calibration
metric: mean log-probability per token of the steered answer under the unsteered model
(steering.calibration.continuation_logprobs / is_coherent).

Run from the repository root:  python bench/green_red_sweep/sweep.py [--limit N] [--parts 1,2,3] [--time-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments.artifacts import vector_for  # noqa: E402
from experiments.colour_swap import (  # noqa: E402
    ANSWER_PREFIX, OPPOSITE, SYSTEM_PROMPT, ColourConfig, first_colour,
)
from experiments.common import COLOUR_CONTROLS, COLOUR_QUESTIONS, balanced_subset, read_jsonl  # noqa: E402
from experiments.decoding import chat_tokens, greedy_decode, kl_divergence  # noqa: E402
from mlx_interp.steering.calibration import COHERENT_LOGPROB, MAX_LOGPROB_DROP, continuation_logprobs, is_coherent  # noqa: E402
from mlx_interp.steering.model import load_model  # noqa: E402

OUT = Path(__file__).resolve().parent
RANGES = {
    "12-17 (recommended)": list(range(12, 18)),
    "8-13": list(range(8, 14)),
    "18-23": list(range(18, 24)),
    "20-28": list(range(20, 29)),
    "4-10": list(range(4, 11)),
    "all (0-29)": list(range(0, 30)),
}
ADD_ALPHAS = (-1.0, -1.5, -2.0, -3.0, -4.0)
REFLECT_ALPHAS = (1.0, 2.0, 3.0)
ANSWER_WORDS = (" green", " Green", " red", " Red")


class Scorer:
    """Decode rows, score colour, coherence (calibration's metric) and first-token KL vs the unsteered row."""

    def __init__(self, lm, cfg):
        self.lm, self.cfg = lm, cfg
        self._lp_cache: dict = {}

    def per_token(self, prompt, toks):
        key = (tuple(prompt), tuple(toks))
        if key not in self._lp_cache:
            self._lp_cache[key] = continuation_logprobs(self.lm, prompt, toks)[0]
        return self._lp_cache[key]

    def token_logprobs(self, prompt, toks):
        lp = self.per_token(prompt, toks)
        return float(lp.mean()) if len(lp) else 0.0

    def non_colour_logprob(self, prompt, toks):
        """Mean unsteered log-prob of the answer tokens that are not part of a colour word (None if all are):
        the calibration metric charges a correct swap ~9 nats for the colour token itself, so this separates
        'the rest of the text is still language' from 'the model did not expect this colour'."""
        lp = self.per_token(prompt, toks)
        keep = [float(x) for x, t in zip(lp, toks) if first_colour(self.lm.tokenizer.decode([t])) == "other"]
        return float(np.mean(keep)) if keep else None

    def decode(self, prompts, ivs):
        return greedy_decode(self.lm, prompts, ivs, max_tokens=self.cfg.max_tokens)


def summarise_rows(rows):
    n = len(rows)
    out = {"n": n}
    for truth in ("green", "red", "control"):
        sub = [r for r in rows if r["truth_kind"] == truth]
        if not sub:
            continue
        k = len(sub)
        d = {"n": k,
             "answers": dict(Counter(r["answer"] for r in sub)),
             "no_colour_rate": sum(r["answer"] == "other" for r in sub) / k,
             "logprob_per_token": float(np.mean([r["logprob"] for r in sub])),
             "logprob_drop": float(np.mean([r["drop"] for r in sub])),
             "coherent_rate": sum(r["coherent"] for r in sub) / k,
             "kl_first": float(np.mean([r["kl"] for r in sub]))}
        if truth in OPPOSITE:
            d["swap_rate"] = sum(r["answer"] == OPPOSITE[truth] for r in sub) / k
            d["kept_truth_rate"] = sum(r["answer"] == truth for r in sub) / k
            ok = [r for r in sub if r["baseline_answer"] == truth]
            d["swap_rate_on_correct"] = (sum(r["answer"] == OPPOSITE[truth] for r in ok) / len(ok)) if ok else None
        else:
            elig = [r for r in sub if r["baseline_answer"] not in OPPOSITE]
            d["contamination_rate"] = (sum(r["answer"] in OPPOSITE for r in elig) / len(elig)) if elig else None
            d["eligible"] = len(elig)
        d["samples"] = [r["text"] for r in sub[:4]]
        if "lp_non_colour" in sub[0]:
            nc = [r["lp_non_colour"] for r in sub if r["lp_non_colour"] is not None]
            d["lp_non_colour"] = float(np.mean(nc)) if nc else None
            d["texts"] = dict(Counter(r["text"] for r in sub).most_common(8))
            sw = [r for r in sub if truth in OPPOSITE and r["answer"] == OPPOSITE[truth]]
            d["swapped_coherent_rate"] = (sum(r["coherent"] for r in sw) / len(sw)) if sw else None
        out[truth] = d
    # aggregate coherence = the calibration rule applied to the setting's mean
    lp = float(np.mean([r["logprob"] for r in rows]))
    drop = float(np.mean([r["drop"] for r in rows]))
    out["logprob_per_token"], out["logprob_drop"] = lp, drop
    out["coherent"] = bool(is_coherent(lp, drop))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="questions per colour (None: all 60)")
    ap.add_argument("--parts", default="1,2,3")
    ap.add_argument("--time-only", action="store_true")
    ap.add_argument("--controls", type=int, default=30)
    ap.add_argument("--out", default=str(OUT / "results.json"))
    ap.add_argument("--add-alphas", default=None, help="comma list; default ADD_ALPHAS")
    ap.add_argument("--reflect-alphas", default=None, help="comma list; default REFLECT_ALPHAS")
    ap.add_argument("--ranges", default=None, help="comma list of RANGES keys' first token, e.g. 8-13,12-17")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    add_alphas = tuple(float(a) for a in args.add_alphas.split(",")) if args.add_alphas else ADD_ALPHAS
    reflect_alphas = tuple(float(a) for a in args.reflect_alphas.split(",")) if args.reflect_alphas else REFLECT_ALPHAS
    ranges = [k for k in RANGES if not args.ranges or k.split()[0] in args.ranges.split(",")]

    cfg = ColourConfig()  # the study's config: max_tokens=3, seed 0
    t0 = time.time()
    lm = load_model("default")
    vector = vector_for(lm)
    questions = read_jsonl(COLOUR_QUESTIONS)
    if args.limit:
        questions = balanced_subset(questions, 2 * args.limit)
    controls = read_jsonl(COLOUR_CONTROLS)[: args.controls]
    prefix = lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    q_tok = [chat_tokens(lm, q["question"], SYSTEM_PROMPT) + prefix for q in questions]
    c_tok = [chat_tokens(lm, c["question"], SYSTEM_PROMPT) + prefix for c in controls]
    items = [("q", i, q["answer"], t) for i, (q, t) in enumerate(zip(questions, q_tok))] + \
            [("c", j, "control", t) for j, t in enumerate(c_tok)]
    sc = Scorer(lm, cfg)

    # unsteered baseline for every item
    base = sc.decode([t for *_, t in items], [()] * len(items))
    base_info = {}
    for (kind, i, truth, toks), d in zip(items, base):
        base_info[(kind, i)] = {"answer": first_colour(d.text), "text": d.text, "first": d.first_logprobs,
                                "logprob": sc.token_logprobs(toks, d.tokens)}
    results = {
        "model": "default (SmolLM2-135M-Instruct)", "vector": {"name": vector.name, "sha256": vector.sha256,
                                                                 "recommended_layers": list(vector.recommended_layers)},
        "config": {"max_tokens": cfg.max_tokens, "system": SYSTEM_PROMPT, "answer_prefix": ANSWER_PREFIX,
                   "n_green": sum(q["answer"] == "green" for q in questions),
                   "n_red": sum(q["answer"] == "red" for q in questions), "n_controls": len(controls),
                   "coherent_logprob": COHERENT_LOGPROB, "max_logprob_drop": MAX_LOGPROB_DROP,
                   "ranges": {k: RANGES[k] for k in ranges}, "add_alphas": add_alphas, "reflect_alphas": reflect_alphas},
        "baseline": summarise_rows([{"truth_kind": truth, "answer": base_info[(k, i)]["answer"], "text": base_info[(k, i)]["text"],
                                     "baseline_answer": base_info[(k, i)]["answer"], "logprob": base_info[(k, i)]["logprob"],
                                     "drop": 0.0, "coherent": True, "kl": 0.0} for k, i, truth, _ in items]),
        "settings": [],
    }
    print(f"loaded + baseline in {time.time() - t0:.1f}s", flush=True)

    def run_setting(op, alpha, rname, which):
        layers = RANGES[rname]
        iv = vector.intervention(alpha=float(alpha), op=op, layers=layers)
        chosen = [it for it in items if it[2] in which]
        t = time.time()
        dec = sc.decode([it[3] for it in chosen], [(iv,)] * len(chosen))
        rows = []
        for (kind, i, truth, toks), d in zip(chosen, dec):
            b = base_info[(kind, i)]
            lp = sc.token_logprobs(toks, d.tokens)
            lp_nc = sc.non_colour_logprob(toks, d.tokens)
            drop = b["logprob"] - lp
            rows.append({"truth_kind": truth, "answer": first_colour(d.text), "text": d.text, "baseline_answer": b["answer"],
                         "logprob": lp, "lp_non_colour": lp_nc, "drop": drop, "coherent": bool(is_coherent(lp, drop)),
                         "kl": kl_divergence(b["first"], d.first_logprobs)})
        s = {"op": op, "alpha": alpha, "layers": rname, "per_layer_alpha": iv.per_layer_alpha,
             "seconds": round(time.time() - t, 2), **summarise_rows(rows)}
        g, r = s.get("green", {}), s.get("red", {})
        print(f"{op:7s} a={alpha:+.1f} {rname:20s} g->r={g.get('swap_rate', float('nan')):.2f} "
              f"r->g={r.get('swap_rate', float('nan')):.2f} none(r)={r.get('no_colour_rate', float('nan')):.2f} "
              f"lp={s['logprob_per_token']:.2f} coh={s['coherent']} ({s['seconds']}s) e.g. {r.get('samples', g.get('samples', ['']))[:2]}",
              flush=True)
        results["settings"].append(s)
        return s

    if args.time_only:
        run_setting("add", -1.5, "12-17 (recommended)", {"red"})
        run_setting("reflect", 1.0, "12-17 (recommended)", {"red", "green", "control"})
        return

    if 3 in parts:  # is " green" reachable as the first answer token?
        ids = {w: lm.tokenizer.encode(w, add_special_tokens=False)[0] for w in ANSWER_WORDS}
        reach = {}
        for truth in ("green", "red"):
            firsts = [base_info[("q", i)]["first"] for k, i, tr, _ in items if k == "q" and tr == truth]
            ent = {}
            for w, tid in ids.items():
                lps = np.array([f[tid] for f in firsts])
                ranks = np.array([int((f > f[tid]).sum()) for f in firsts])
                ent[w] = {"mean_logprob": float(lps.mean()), "median_logprob": float(np.median(lps)),
                          "min": float(lps.min()), "max": float(lps.max()), "median_rank": float(np.median(ranks)),
                          "max_rank": int(ranks.max())}
            gr = np.array([np.logaddexp(f[ids[" green"]], f[ids[" Green"]]) - np.logaddexp(f[ids[" red"]], f[ids[" Red"]])
                           for f in firsts])
            top = Counter(lm.tokenizer.decode([int(np.argmax(f))]) for f in firsts)
            ent["log_odds_green_vs_red"] = {"mean": float(gr.mean()), "min": float(gr.min()), "max": float(gr.max())}
            ent["top1_first_token"] = dict(top)
            reach[truth] = ent
        results["reachability"] = reach
        print(json.dumps(reach, indent=1), flush=True)

    save = lambda: Path(args.out).write_text(json.dumps(results, indent=1, default=float))  # noqa: E731
    if 1 in parts:
        for rname in ranges:
            for a in add_alphas:
                run_setting("add", a, rname, {"red"})
            save()
    if 2 in parts:
        for rname in ranges:
            for a in reflect_alphas:
                run_setting("reflect", a, rname, {"red", "green", "control"})
            save()
    results["elapsed_s"] = round(time.time() - t0, 1)
    save()


if __name__ == "__main__":
    main()
