"""A swap that works both ways: read the side on one direction, push along another.

Reflect about green_red's midpoint swaps one way only, because at the answer
position green and red questions project alike on the direction that steers
(docs/steering.md). A direction built at that position (steering/data/green_red_chat.jsonl,
in the colour study's answer slot) separates them but does not steer. So:
read the side on the chat-built direction at one layer of an unsteered pass
(projection above its build midpoint = "red"), then add green_red away from
that side (+alpha for "green", -alpha for "red") as the study does with the
true colour. Layer chosen on the dev questions (steering/data/green_red_chat_dev.jsonl);
tested on the colour study's 120 questions and 30 controls, none of which the
reader was built or tuned on; same prompts, decoding and scoring as the study.

    python bench/green_red_gated_check.py [--alpha 1.5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import mlx_interp.steering  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def read(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from mlx_interp.experiments.colour_swap import ANSWER_PREFIX, OPPOSITE, SYSTEM_PROMPT, first_colour, wilson_interval
    from mlx_interp.experiments.common import COLOUR_CONTROLS, COLOUR_QUESTIONS
    from mlx_interp.experiments.decoding import chat_tokens, greedy_decode
    from mlx_interp.steering.capture import capture_hidden_states
    from mlx_interp.steering.extraction import vector_from_states
    from mlx_interp.steering.model import load_model
    from mlx_interp.steering.vectors import SteeringVector

    lm = load_model("default", progress=False)
    shipped = SteeringVector.load(ROOT / "steering" / "library" / "green_red.json")
    prefix = list(lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False))

    def ids(q: str) -> list[int]:
        return chat_tokens(lm, q, SYSTEM_PROMPT) + prefix

    pairs = read(ROOT / "steering" / "data" / "green_red_chat.jsonl")
    dev = read(ROOT / "steering" / "data" / "green_red_chat_dev.jsonl")
    questions, controls = read(COLOUR_QUESTIONS), read(COLOUR_CONTROLS)
    pos = capture_hidden_states(lm, [ids(p["positive"]) for p in pairs])
    neg = capture_hidden_states(lm, [ids(p["negative"]) for p in pairs])
    reader = vector_from_states(pos, neg, "green_red_reader")
    units = reader.directions / np.linalg.norm(reader.directions, axis=1, keepdims=True)

    def predict(states: np.ndarray, layer: int) -> np.ndarray:
        return np.where(states[:, layer, :] @ units[layer] > reader.midpoints[layer], "red", "green")

    dev_states = capture_hidden_states(lm, [ids(q["question"]) for q in dev])
    truth_dev = np.array([q["answer"] for q in dev])
    dev_acc = [float(np.mean(predict(dev_states, l) == truth_dev)) for l in range(lm.num_layers)]
    layer = int(max(range(lm.num_layers), key=lambda l: (dev_acc[l], l)))
    test_states = capture_hidden_states(lm, [ids(q["question"]) for q in questions])
    truth = np.array([q["answer"] for q in questions])
    pred = predict(test_states, layer)
    ctl_states = capture_hidden_states(lm, [ids(c["question"]) for c in controls])
    ctl_pred = predict(ctl_states, layer)
    print(f"reader layer {layer}: dev accuracy {dev_acc[layer]:.3f}; study questions {np.mean(pred == truth):.3f}", flush=True)

    def add_away(side: str):
        return (shipped.intervention(alpha=args.alpha if side == "green" else -args.alpha),)

    prompts = [ids(q["question"]) for q in questions] * 2 + [ids(c["question"]) for c in controls] * 2
    ivs = [()] * len(questions) + [add_away(p) for p in pred] + [()] * len(controls) + [add_away(p) for p in ctl_pred]
    out = greedy_decode(lm, prompts, ivs, max_tokens=3)
    nq, nc = len(questions), len(controls)
    base = [first_colour(o.text) for o in out[:nq]]
    gated = [first_colour(o.text) for o in out[nq : 2 * nq]]
    cbase = [first_colour(o.text) for o in out[2 * nq : 2 * nq + nc]]
    cgated = [first_colour(o.text) for o in out[2 * nq + nc :]]

    def rate(rows):
        k, n = sum(rows), len(rows)
        return {"k": k, "n": n, "rate": k / n if n else None, "wilson95": list(wilson_interval(k, n))}

    swapped = [g == OPPOSITE[t] for g, t in zip(gated, truth)]
    eligible = [i for i, b in enumerate(cbase) if b not in OPPOSITE]
    result = {
        "alpha": args.alpha,
        "reader": {"layer": layer, "dev_accuracy_by_layer": dev_acc, "study_accuracy": float(np.mean(pred == truth)),
                   "study_accuracy_green": float(np.mean(pred[truth == "green"] == "green")),
                   "study_accuracy_red": float(np.mean(pred[truth == "red"] == "red"))},
        "per_layer_alpha": shipped.intervention(alpha=args.alpha).per_layer_alpha,
        "swap_all": rate(swapped),
        "swap_correct": rate([s for s, b, t in zip(swapped, base, truth) if b == t]),
        "green_to_red": rate([s for s, t in zip(swapped, truth) if t == "green"]),
        "red_to_green": rate([s for s, t in zip(swapped, truth) if t == "red"]),
        "no_colour_rate": float(np.mean([g == "other" for g in gated])),
        "controls_turned_green_or_red": f"{sum(cgated[i] in OPPOSITE for i in eligible)}/{len(eligible)}",
        "unsteered_correct": f"{sum(b == t for b, t in zip(base, truth))}/{nq}",
        "samples": [{"q": q["question"], "truth": t, "read": p, "text": o.text}
                    for q, t, p, o in list(zip(questions, truth, pred, out[nq : 2 * nq]))[:8]],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
