"""Is `{"green_red": 1.5}` a strong, coherent steer? And does reflect at alpha 1 swap both ways?

Greedy (temperature 0) answers to colour questions from experiments/data, unsteered,
with add (+alpha on green questions, -alpha on red ones: the vector points green -> red),
and with reflect; controls (other colours) under reflect. Coherence of each steered
answer: its mean token log-probability under the unsteered model, against the
unsteered answer's.

    python bench/colour_steer_check.py [--per-colour 6] [--alpha 1.5] [--reflect 1] [--controls 6] [--layers 12-17]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import mlx_interp.steering  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / "experiments" / "data"
COLOURS = ("green", "red", "blue", "yellow", "white", "black", "orange", "purple", "brown", "pink", "grey", "gray")


def first_colour(text: str) -> str:
    import re

    m = re.search(r"\b(" + "|".join(COLOURS) + r")\b", text, re.IGNORECASE)
    return m.group(1).lower() if m else "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-colour", type=int, default=6)
    ap.add_argument("--controls", type=int, default=6)
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--reflect", type=float, default=1.0)
    ap.add_argument("--layers", default=None)
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--vector", default="steering/library/green_red.json")
    ap.add_argument("--skip-reflect", action="store_true")
    ap.add_argument("--answer-slot", action="store_true",
                    help="the colour study's answer slot: system 'Answer with one word.' and the reply opened with 'The answer is'")
    args = ap.parse_args()

    from mlx_interp.steering.calibration import _steered_greedy, continuation_logprobs
    from mlx_interp.steering.capture import encode
    from mlx_interp.steering.model import load_model
    from mlx_interp.steering.vectors import SteeringVector

    lm = load_model("default", progress=False)
    vec = SteeringVector.load(args.vector)
    qs = [json.loads(l) for l in (DATA / "colour_questions.jsonl").read_text().splitlines() if l.strip()]
    green = [q for q in qs if q["answer"] == "green" and q["id"].endswith("-0")][: args.per_colour]
    red = [q for q in qs if q["answer"] == "red" and q["id"].endswith("-0")][: args.per_colour]
    controls = [json.loads(l) for l in (DATA / "colour_controls.jsonl").read_text().splitlines() if l.strip()][: args.controls]
    items = green + red
    add = {q["id"]: vec.intervention(alpha=args.alpha if q["answer"] == "green" else -args.alpha, layers=args.layers) for q in items}
    reflect = vec.intervention(alpha=args.reflect, op="reflect", layers=args.layers)
    rows = []  # (item, condition, interventions)
    for q in items:
        rows.append((q, "plain", ()))
        rows.append((q, "add", (add[q["id"]],)))
        if not args.skip_reflect:
            rows.append((q, "reflect", (reflect,)))
    for q in controls:
        rows.append((q, "plain", ()))
        if not args.skip_reflect:
            rows.append((q, "reflect", (reflect,)))
    if args.answer_slot:
        prefix = lm.tokenizer.encode("The answer is", add_special_tokens=False)
        ids = [encode(lm, q["question"], chat=True, system="Answer with one word.") + list(prefix) for q, _, _ in rows]
    else:
        ids = [encode(lm, q["question"], chat=True) for q, _, _ in rows]
    toks, _ = _steered_greedy(lm, ids, [ivs for _, _, ivs in rows], args.max_tokens)
    results = {}
    for (q, cond, _), prompt, t in zip(rows, ids, toks):
        lp, _ = continuation_logprobs(lm, prompt, t)
        results.setdefault(q["id"], {"answer": q["answer"], "control": q["id"].startswith("control")})[cond] = {
            "text": lm.tokenizer.decode(t),
            "colour": first_colour(lm.tokenizer.decode(t)),
            "logprob_per_token": float(lp.mean()) if len(lp) else 0.0,
        }
    summary = {"alpha": args.alpha, "reflect_alpha": args.reflect, "layers": args.layers or list(vec.recommended_layers),
               "answer_slot": args.answer_slot, "max_tokens": args.max_tokens}
    opposite = {"green": "red", "red": "green"}
    for cond in ("add", "reflect"):
        sel = [r for r in results.values() if not r["control"] and cond in r]
        if not sel:
            continue
        for colour in ("green", "red"):
            part = [r for r in sel if r["answer"] == colour]
            summary[f"{cond}_swap_{colour}"] = f"{sum(r[cond]['colour'] == opposite[colour] for r in part)}/{len(part)}"
        summary[f"{cond}_plain_correct"] = f"{sum(r['plain']['colour'] == r['answer'] for r in sel)}/{len(sel)}"
        summary[f"{cond}_logprob_drop"] = round(float(np.mean([r["plain"]["logprob_per_token"] - r[cond]["logprob_per_token"] for r in sel])), 3)
        summary[f"{cond}_logprob_per_token"] = round(float(np.mean([r[cond]["logprob_per_token"] for r in sel])), 3)
        for colour in ("green", "red"):  # among the questions the unsteered model answered correctly
            right = [r for r in sel if r["answer"] == colour and r["plain"]["colour"] == colour]
            summary[f"{cond}_swap_{colour}_of_correct"] = f"{sum(r[cond]['colour'] == opposite[colour] for r in right)}/{len(right)}"
    ctl = [r for r in results.values() if r["control"] and "reflect" in r]
    if ctl:
        summary["controls_touched"] = f"{sum(r['reflect']['colour'] != r['plain']['colour'] for r in ctl)}/{len(ctl)}"
        summary["controls_to_green_or_red"] = f"{sum(r['reflect']['colour'] in ('green', 'red') for r in ctl)}/{len(ctl)}"
    print(json.dumps({"summary": summary, "answers": results}, indent=1))


if __name__ == "__main__":
    main()
