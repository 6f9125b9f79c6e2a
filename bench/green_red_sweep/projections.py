"""Where do the study's red and green questions sit on green_red at the answer position, vs the reflect midpoint?
Projection p_l = h_l . u_l (u_l = v_l/|v_l|) at the last prompt token ("...The answer is"), in units of
|v_l| (the class-mean difference the vector was built from), relative to the midpoint m_l: (p_l - m_l)/|v_l|.
Extraction classes sit at -0.5 (green) and +0.5 (red) on this scale."""
from pathlib import Path
import json
import sys
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.artifacts import vector_for
from experiments.colour_swap import ANSWER_PREFIX, SYSTEM_PROMPT
from experiments.common import COLOUR_QUESTIONS, balanced_subset, read_jsonl
from experiments.decoding import chat_tokens
from mlx_interp.steering.capture import capture_hidden_states
from mlx_interp.steering.model import load_model

lm = load_model("default"); vec = vector_for(lm)
qs = balanced_subset(read_jsonl(COLOUR_QUESTIONS), 60)
prefix = lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
toks = [chat_tokens(lm, q["question"], SYSTEM_PROMPT) + prefix for q in qs]
H = capture_hidden_states(lm, toks, position="last")  # (N, L, D)
D = vec.directions.astype(np.float64); n = np.linalg.norm(D, axis=1); U = D / n[:, None]
P = (np.einsum("nld,ld->nl", H.astype(np.float64), U) - vec.midpoints[None, :]) / n[None, :]
out = {}
for c in ("green", "red"):
    m = np.array([q["answer"] == c for q in qs])
    out[c] = {"mean": P[m].mean(0).round(3).tolist(), "sd": P[m].std(0).round(3).tolist()}
out["layers_note"] = "index = layer 0..29; value = (projection - midpoint)/|class-mean diff|"
json.dump(out, open(str(Path(__file__).resolve().parent / "projections.json"), "w"), indent=1)
for l in range(30):
    print(l, f"green {out['green']['mean'][l]:+.2f}±{out['green']['sd'][l]:.2f}  red {out['red']['mean'][l]:+.2f}±{out['red']['sd'][l]:.2f}  diff {out['red']['mean'][l]-out['green']['mean'][l]:+.2f}")
