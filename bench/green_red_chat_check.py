"""Where does green vs red live at the chat answer position, and which vector steers it both ways?

Captures the residual stream at the last prompt token of colour questions in the
chat template (the position the first answer token is read from), for the
chat vector's build items (steering/data/green_red_chat.jsonl) and its dev items
(steering/data/green_red_chat_dev.jsonl; neither overlaps the colour study's
items). Reports per layer: the held-out separation of the build pairs, the dev
questions' class gap along each candidate direction (in units of that direction's
length: the add alpha that carries a green state to a red one), and the cosine
with the shipped sentence-final vector. Then greedy answers of the dev questions
in two contexts (the served one: plain chat turn; the study's answer slot: system
"Answer with one word." and the reply opened with "The answer is") under add
(+alpha on green, -alpha on red) and reflect, for each candidate vector and band.

    python bench/green_red_chat_check.py [--bands 12-17,10-15,14-19] [--alpha 1.5] [--reflect 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import mlx_interp.steering  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
STEER_DATA = ROOT / "steering" / "data"
SYSTEM, PREFIX = "Answer with one word.", "The answer is"
OPPOSITE = {"green": "red", "red": "green"}


def read(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bands", default="12-17,10-15,14-19")
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--reflect", type=float, default=1.0)
    ap.add_argument("--max-tokens", type=int, default=6)
    ap.add_argument("--contexts", default="chat,slot")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from experiments.colour_swap import first_colour
    from experiments.decoding import greedy_decode
    from mlx_interp.steering.capture import capture_hidden_states, encode
    from mlx_interp.steering.extraction import heldout_separation, vector_from_states
    from mlx_interp.steering.model import load_model
    from mlx_interp.steering.vectors import SteeringVector

    lm = load_model("default", progress=False)
    shipped = SteeringVector.load(ROOT / "steering" / "library" / "green_red.json")
    pairs, dev = read(STEER_DATA / "green_red_chat.jsonl"), read(STEER_DATA / "green_red_chat_dev.jsonl")
    prefix = list(lm.tokenizer.encode(PREFIX, add_special_tokens=False))

    def ids(question: str, ctx: str) -> list[int]:
        return encode(lm, question, chat=True) if ctx == "chat" else encode(lm, question, chat=True, system=SYSTEM) + prefix

    contexts = args.contexts.split(",")
    report: dict = {"contexts": {}, "args": vars(args)}
    candidates: dict[str, SteeringVector] = {"shipped": shipped}
    for ctx in contexts:
        pos = capture_hidden_states(lm, [ids(p["positive"], ctx) for p in pairs])
        neg = capture_hidden_states(lm, [ids(p["negative"], ctx) for p in pairs])
        vec = vector_from_states(pos, neg, f"green_red_{ctx}")
        candidates[ctx] = vec
        sep, acc = heldout_separation(pos, neg)
        dstates = capture_hidden_states(lm, [ids(q["question"], ctx) for q in dev])
        is_red = np.array([q["answer"] == "red" for q in dev])
        rows = []
        for layer in range(lm.num_layers):
            row = {"layer": layer, "build_separation": round(float(sep[layer]), 2), "build_sign_acc": round(float(acc[layer]), 3)}
            for name, v in (("shipped", shipped), (ctx, vec)):
                d = v.directions[layer].astype(np.float64)
                proj = dstates[:, layer, :].astype(np.float64) @ d / float(d @ d)  # in units of this direction
                gap = proj[is_red].mean() - proj[~is_red].mean()
                pooled = np.sqrt((proj[is_red].var(ddof=1) + proj[~is_red].var(ddof=1)) / 2)
                row[f"dev_gap_{name}"] = round(float(gap), 3)
                row[f"dev_d_{name}"] = round(float(gap / max(pooled, 1e-12)), 2)
            a, b = shipped.directions[layer].astype(np.float64), vec.directions[layer].astype(np.float64)
            row["cos_shipped"] = round(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), 3)
            rows.append(row)
        report["contexts"][ctx] = {"per_layer": rows, "recommended_layers": list(vec.recommended_layers)}
        print(ctx, "recommended", vec.recommended_layers, flush=True)
        for r in rows:
            print(json.dumps(r), flush=True)

    # greedy steering on the dev questions
    bands = [b for b in args.bands.split(",") if b]
    results = []
    for ctx in contexts:
        prompts, ivs, meta = [], [], []
        for q in dev:
            p = ids(q["question"], ctx)
            prompts.append(p), ivs.append(()), meta.append((q, "plain", None, None))
            away = 1.0 if q["answer"] == "green" else -1.0
            for cname, v in candidates.items():
                for band in bands:
                    prompts.append(p), ivs.append((v.intervention(alpha=away * args.alpha, layers=band),)), meta.append((q, "add", cname, band))
                    prompts.append(p), ivs.append((v.intervention(alpha=args.reflect, op="reflect", layers=band),)), meta.append((q, "reflect", cname, band))
        out = greedy_decode(lm, prompts, ivs, max_tokens=args.max_tokens, share_prefix=False)
        plain = {m[0]["id"]: first_colour(o.text) for m, o in zip(meta, out) if m[1] == "plain"}
        table: dict = {}
        for (q, op, cname, band), o in zip(meta, out):
            if op == "plain":
                continue
            key = (cname, band, op)
            t = table.setdefault(key, {"g2r": 0, "r2g": 0, "n_green": 0, "n_red": 0, "none": 0, "samples": []})
            col = first_colour(o.text)
            t["n_" + q["answer"]] += 1
            if col == OPPOSITE[q["answer"]]:
                t["g2r" if q["answer"] == "green" else "r2g"] += 1
            t["none"] += col == "other"
            if len(t["samples"]) < 3:
                t["samples"].append(o.text)
        n_ok = sum(plain[q["id"]] == q["answer"] for q in dev)
        print(f"[{ctx}] plain correct {n_ok}/{len(dev)}", flush=True)
        for (cname, band, op), t in table.items():
            line = {"context": ctx, "vector": cname, "layers": band, "op": op, "green_to_red": f"{t['g2r']}/{t['n_green']}",
                    "red_to_green": f"{t['r2g']}/{t['n_red']}", "no_colour": f"{t['none']}/{t['n_green'] + t['n_red']}",
                    "samples": t["samples"]}
            results.append(line)
            print(json.dumps(line), flush=True)
        report.setdefault("plain_correct", {})[ctx] = f"{n_ok}/{len(dev)}"
    report["steering"] = results
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
