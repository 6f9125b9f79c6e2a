"""Does one alpha mean one push whatever the layers? Measures, for one vector at one alpha,
the realised shift at the last steered layer (in units of that layer's class-mean difference)
and the KL of the next-token distribution, for several layer choices.

    python bench/alpha_unit_check.py [--alpha 1.5] [--model default] [--vector steering/library/green_red.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import mlx_interp.steering  # noqa: F401  (BLAS before mlx)

PROMPTS = [
    "What colour is fresh grass? Answer with one word.",
    "Describe a walk in the park in one sentence.",
]


def measure(lm, vector, layer_sets: dict[str, tuple[int, ...]], alpha: float, prompts=PROMPTS, unit=None):
    """{label: {"realised_alpha": mean, "kl": mean, "per_layer_alpha": c}} at the last prompt token."""
    import mlx.core as mx

    from mlx_interp.steering.capture import Recorder, ResidualHook, encode
    from mlx_interp.steering.hooks import layer_hooks
    from mlx_interp.steering.interventions import Intervention, Op, Phase, RowSteering

    def run(ids, ivs):
        rec = Recorder(last_only=True)
        hook = ResidualHook(steering=RowSteering.build([ivs], Phase.PROMPT), recorder=rec)
        with layer_hooks(lm.model, hook):
            logits = lm.model(mx.array([ids]))[0, -1].astype(mx.float32)
            mx.eval(logits, list(rec.outputs.values()))
        states = {l: np.array(h[0, -1].astype(mx.float32)) for l, h in rec.outputs.items()}
        lp = np.array(logits - mx.logsumexp(logits))
        return lp, states

    encoded = [encode(lm, prompt, chat=True) for prompt in prompts]
    baseline = [run(ids, []) for ids in encoded]  # once per prompt, shared by every layer set
    out = {}
    for label, layers in layer_sets.items():
        kw = {"alpha_unit": unit} if unit is not None else {"alpha_unit": vector.alpha_unit}
        iv = Intervention(vector.name, vector.directions, Op.ADD, alpha=alpha, layers=layers, **kw)
        last = max(layers)
        v = vector.directions[last].astype(np.float64)
        realised, kls = [], []
        for ids, (lp0, s0) in zip(encoded, baseline):
            lp1, s1 = run(ids, [iv])
            realised.append(float((s1[last] - s0[last]) @ v / (v @ v)))
            p0 = np.exp(lp0)
            kls.append(float(np.sum(p0 * (lp0 - lp1))))
        out[label] = {
            "layers": f"{min(layers)}-{max(layers)}" if len(layers) > 1 else str(layers[0]),
            "per_layer_alpha": round(iv.per_layer_alpha, 4),
            "realised_alpha": round(float(np.mean(realised)), 3),
            "kl": round(float(np.mean(kls)), 3),
        }
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--alpha", type=float, default=1.5)
    ap.add_argument("--model", default="default")
    ap.add_argument("--vector", default="steering/library/green_red.json")
    ap.add_argument("--unit", default=None, help="only this unit: class_mean_total or per_layer (default: both)")
    ap.add_argument("--sets", default=None, help="comma-separated subset of: last, band, 0-band_end, all")
    args = ap.parse_args()
    from mlx_interp.steering.model import load_model
    from mlx_interp.steering.vectors import SteeringVector

    lm = load_model(args.model, progress=False)
    vec = SteeringVector.load(args.vector)
    band = vec.recommended_layers
    L = lm.num_layers
    sets = {
        "last": (band[-1],),
        "band": band,
        "0-band_end": tuple(range(0, band[-1] + 1)),
        "all": tuple(range(L)),
    }
    if args.sets:
        sets = {k: v for k, v in sets.items() if k in args.sets.split(",")}
    for unit in ([args.unit] if args.unit else ["class_mean_total", "per_layer"]):
        print(unit, json.dumps(measure(lm, vec, sets, args.alpha, unit=unit), indent=1), flush=True)


if __name__ == "__main__":
    main()
