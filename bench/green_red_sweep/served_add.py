# add toward green (red questions) and toward red (green questions), as served: the whole prompt steered
# (experiments.decoding after the 2026-11-30 fix). Subset: the sweep's 30 red + 30 green questions.
# Run from the repository root: python bench/green_red_sweep/served_add.py
import sys; from pathlib import Path; sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import mlx_interp.steering  # noqa: F401  (OpenBLAS before mlx)
from mlx_interp.steering.model import load_model
from mlx_interp.experiments import colour_swap as cs
from mlx_interp.experiments.decoding import chat_tokens, greedy_decode
from mlx_interp.experiments.common import read_jsonl
from mlx_interp.experiments.artifacts import vector_for
lm = load_model("default", progress=False)
vec = vector_for(lm, "green_red")
qs = cs.balanced_subset(read_jsonl(cs.COLOUR_QUESTIONS), 60)
red = [q for q in qs if q["answer"] == "red"]; green = [q for q in qs if q["answer"] == "green"]
ap = lm.tokenizer.encode(cs.ANSWER_PREFIX, add_special_tokens=False)
def run(qset, alpha, layers):
    toks = [chat_tokens(lm, q["question"], cs.SYSTEM_PROMPT) + ap for q in qset]
    ivs = [((vec.intervention(alpha=alpha, op="add", layers=layers),) if alpha else ()) for _ in qset]
    out = greedy_decode(lm, toks, ivs, max_tokens=3)
    ans = [cs.first_colour(o.text) for o in out]
    return ans, [o.text for o in out[:4]]
for layers in ((12,13,14,15,16,17), (8,9,10,11,12,13)):
    for a in (0, -0.5, -0.75, -1.0):
        ans, ex = run(red, a, layers)
        print(layers[0], a, "red->green", sum(x == "green" for x in ans), "/", len(ans), "none", sum(x is None for x in ans), ex)
for a in (1.5,):
    ans, ex = run(green, a, (12,13,14,15,16,17))
    print("green->red at", a, sum(x == "red" for x in ans), "/", len(ans), ex)
