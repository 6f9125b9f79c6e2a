"""Does it matter that greedy_decode runs the shared chat prefix unsteered? (issue 8 follow-up)

experiments.decoding.greedy_decode computes the prompts' common prefix (the 13-token system turn) once, before the
steering hook is installed, so those positions are never steered in the study or the sweep; the server's prompt cache
is keyed by the prompt steering, so a served request is steered at every prompt position. This reruns a few reflect
settings with share_prefix=False (every position steered) against the default (prefix unsteered), on the sweep's subset.

    python bench/green_red_sweep/prefix_check.py                       # alpha 1 and 3 on 12-17, both ways (prefix_check.json)
    python bench/green_red_sweep/prefix_check.py --steered-sweep       # prefix steered only, more alphas (prefix_check_sweep.json)
"""
import json
import sys
import time
from pathlib import Path


HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from sweep import Scorer, summarise_rows  # noqa: E402

from experiments.artifacts import vector_for  # noqa: E402
from experiments.colour_swap import ANSWER_PREFIX, SYSTEM_PROMPT, ColourConfig, first_colour  # noqa: E402
from experiments.common import COLOUR_CONTROLS, COLOUR_QUESTIONS, balanced_subset, read_jsonl  # noqa: E402
from experiments.decoding import chat_tokens, greedy_decode, kl_divergence  # noqa: E402
from mlx_interp.steering.calibration import is_coherent  # noqa: E402
from mlx_interp.steering.model import load_model  # noqa: E402


def main():
    lm = load_model("default")
    vec = vector_for(lm)
    cfg = ColourConfig()
    prefix = lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    qs = balanced_subset(read_jsonl(COLOUR_QUESTIONS), 60)
    cs = read_jsonl(COLOUR_CONTROLS)[:16]
    items = [(q["answer"], chat_tokens(lm, q["question"], SYSTEM_PROMPT) + prefix) for q in qs] + \
            [("control", chat_tokens(lm, c["question"], SYSTEM_PROMPT) + prefix) for c in cs]
    sc = Scorer(lm, cfg)
    base = sc.decode([t for _, t in items], [()] * len(items))
    base_info = [{"answer": first_colour(d.text), "first": d.first_logprobs, "logprob": sc.token_logprobs(t, d.tokens)}
                 for (_, t), d in zip(items, base)]
    sweep = "--steered-sweep" in sys.argv
    grid = ([(a, (12, 17), False) for a in (2.0, 2.5, 4.0, 5.0)] + [(a, (8, 13), False) for a in (2.0, 3.0)]) if sweep else \
        [(a, (12, 17), share) for a in (1.0, 3.0) for share in (True, False)]
    out_path = HERE / ("prefix_check_sweep.json" if sweep else "prefix_check.json")
    out = {"note": __doc__, "settings": []}
    for alpha, (lo, hi), share in grid:
        iv = vec.intervention(alpha=alpha, op="reflect", layers=list(range(lo, hi + 1)))
        if True:
            t0 = time.time()
            dec = greedy_decode(lm, [t for _, t in items], [(iv,)] * len(items), max_tokens=cfg.max_tokens, share_prefix=share)
            rows = []
            for (truth, t), d, b in zip(items, dec, base_info):
                lp = sc.token_logprobs(t, d.tokens)
                rows.append({"truth_kind": truth, "answer": first_colour(d.text), "text": d.text, "baseline_answer": b["answer"],
                             "logprob": lp, "drop": b["logprob"] - lp, "coherent": bool(is_coherent(lp, b["logprob"] - lp)),
                             "kl": kl_divergence(b["first"], d.first_logprobs)})
            s = {"op": "reflect", "alpha": alpha, "layers": f"{lo}-{hi}", "prefix_steered": not share, **summarise_rows(rows)}
            out["settings"].append(s)
            print(f"reflect a={alpha:g} {lo}-{hi} prefix {'steered  ' if not share else 'unsteered'} g->r={s['green']['swap_rate']:.2f} "
                  f"r->g={s['red']['swap_rate']:.2f} ctrl={s['control']['contamination_rate']:.2f} of {s['control']['eligible']} "
                  f"lp={s['logprob_per_token']:.2f} ({time.time() - t0:.0f}s) {s['red']['samples'][:2]}", flush=True)
            out_path.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
