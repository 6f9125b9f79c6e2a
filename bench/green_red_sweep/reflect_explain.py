"""Why reflect at alpha 1 does not swap (issue 8): what a reflect does to the answer-slot state, by class.

For each reflect setting, the residual stream at the answer slot (the ' "' the model always answers first)
of the sweep's 30 green + 30 red questions is captured with and without the intervention. Two readouts,
per layer, in class-mean differences of the direction read:
  along u (the shipped green_red direction): the mean shift of green and of red questions;
  along c (the direction that separates held-out green and red questions there: red minus green class means of
  the chat training data, chat_data.py): shift of green, shift of red, and the swap fraction
      (shift_green - shift_red) / (2 * (mean_red - mean_green))   unsteered gap on the held-out questions,
  which is 1 when the two classes' means trade places along c and 0 when the shift is the same for both.
capture_hidden_states steers every prompt position (greedy_decode leaves the shared chat prefix unsteered:
the 13 tokens of the system turn); the decode numbers are in reflect_midpoint.json.

    python bench/green_red_sweep/reflect_explain.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from chat_data import train_rows  # noqa: E402

from experiments.artifacts import vector_for  # noqa: E402
from experiments.colour_swap import ANSWER_PREFIX, SYSTEM_PROMPT  # noqa: E402
from experiments.common import COLOUR_QUESTIONS, balanced_subset, read_jsonl  # noqa: E402
from experiments.decoding import chat_tokens  # noqa: E402
from mlx_interp.steering.capture import capture_hidden_states  # noqa: E402
from mlx_interp.steering.interventions import Intervention  # noqa: E402
from mlx_interp.steering.model import load_model  # noqa: E402


def main():
    lm = load_model("default")
    vec = vector_for(lm)
    prefix = lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    slot = lm.tokenizer.encode(' "', add_special_tokens=False)
    toks = lambda q: chat_tokens(lm, q, SYSTEM_PROMPT) + prefix + slot  # noqa: E731
    qs = balanced_subset(read_jsonl(COLOUR_QUESTIONS), 60)
    is_red = np.array([q["answer"] == "red" for q in qs])
    q_tok = [toks(q["question"]) for q in qs]
    train = train_rows()
    tr = {k: capture_hidden_states(lm, [toks(q) for q in v], position="last").astype(np.float64) for k, v in train.items()}
    D = vec.directions.astype(np.float64)
    n_u = np.linalg.norm(D, axis=1)
    U = D / n_u[:, None]
    C = tr["red"].mean(0) - tr["green"].mean(0)  # (L, D) the colour difference at the answer slot, chat data
    n_c = np.linalg.norm(C, axis=1)
    Cu = C / n_c[:, None]
    # midpoints as in reflect_midpoint.py: extraction, and the chat answer-slot mean (green + red + neutral)
    m_chat = np.mean([np.einsum("nld,ld->nl", tr[k], U).mean(0) for k in tr], axis=0)
    mids = {"extraction": vec.midpoints.astype(np.float64), "chat-answer": m_chat}

    H0 = capture_hidden_states(lm, q_tok, position="last").astype(np.float64)
    gap_c = (np.einsum("nld,ld->nl", H0[is_red], Cu).mean(0) - np.einsum("nld,ld->nl", H0[~is_red], Cu).mean(0))
    out = {"layers_note": "index = layer", "heldout_gap_along_c_in_|c|": (gap_c / n_c).round(3).tolist(),
           "norm_c_over_norm_u": (n_c / n_u).round(3).tolist(),
           "cos_c_u": np.einsum("ld,ld->l", Cu, U).round(3).tolist(), "settings": {}}
    print("held-out gap along c / |c|:", (gap_c / n_c).round(2).tolist())
    print("|c|/|u|:", (n_c / n_u).round(3).tolist())
    settings = [("extraction", 1.0, range(12, 18)), ("extraction", 3.0, range(12, 18)), ("chat-answer", 1.0, range(12, 18)),
                ("extraction", 1.0, range(8, 14)), ("chat-answer", 1.0, range(18, 24)), ("chat-answer", 1.0, range(22, 28))]
    for mname, alpha, layers in settings:
        iv = Intervention(name="green_red", directions=vec.directions, op="reflect", alpha=alpha, layers=tuple(layers),
                          midpoints=mids[mname].astype(np.float32), key=mname)
        H = capture_hidden_states(lm, q_tok, position="last", interventions=[iv]).astype(np.float64)
        dH = H - H0
        su = np.einsum("nld,ld->nl", dH, U) / n_u
        sc = np.einsum("nld,ld->nl", dH, Cu) / n_c
        swap = (sc[~is_red].mean(0) - sc[is_red].mean(0)) / (2 * gap_c / n_c)
        tag = f"reflect a={alpha:g} {layers[0]}-{layers[-1]} about {mname} midpoint"
        out["settings"][tag] = {
            "shift_u_green": su[~is_red].mean(0).round(3).tolist(), "shift_u_red": su[is_red].mean(0).round(3).tolist(),
            "shift_c_green": sc[~is_red].mean(0).round(3).tolist(), "shift_c_red": sc[is_red].mean(0).round(3).tolist(),
            "swap_fraction_c": swap.round(3).tolist(),
            "shift_norm_over_u": (np.linalg.norm(dH, axis=2).mean(0) / n_u).round(3).tolist()}
        s = out["settings"][tag]
        print(tag)
        for l in (17, 20, 23, 26, 29):
            print(f"  L{l}: along u green {s['shift_u_green'][l]:+.2f} red {s['shift_u_red'][l]:+.2f} | along c green "
                  f"{s['shift_c_green'][l]:+.2f} red {s['shift_c_red'][l]:+.2f} swap {s['swap_fraction_c'][l]:+.2f} | |dh|/|u| {s['shift_norm_over_u'][l]:.2f}")
    (HERE / "reflect_explain.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
