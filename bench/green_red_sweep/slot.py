"""Part 3 in the real slot: the unsteered model always opens its answer with ' "' (greedy top-1 on every question),
so the colour word is the token after it. Log-probs there of green/Green vs red/Red, per question class."""
from pathlib import Path
import json
import sys
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.colour_swap import ANSWER_PREFIX, SYSTEM_PROMPT
from experiments.common import COLOUR_QUESTIONS, balanced_subset, read_jsonl
from experiments.decoding import chat_tokens
from mlx_interp.steering.calibration import continuation_logprobs
from mlx_interp.steering.model import load_model
lm = load_model("default"); tk = lm.tokenizer
qs = balanced_subset(read_jsonl(COLOUR_QUESTIONS), 60)
pre = tk.encode(ANSWER_PREFIX, add_special_tokens=False); quote = tk.encode(' "', add_special_tokens=False)
words = {w: tk.encode(w, add_special_tokens=False) for w in ("green", "Green", "red", "Red")}
assert all(len(v) == 1 for v in words.values()), words
out = {}
for c in ("green", "red"):
    lps = {w: [] for w in words}; ranks = {w: [] for w in words}; odds = []
    for q in (q for q in qs if q["answer"] == c):
        _, first = continuation_logprobs(lm, chat_tokens(lm, q["question"], SYSTEM_PROMPT) + pre + quote, [])
        for w, (t,) in words.items():
            lps[w].append(float(first[t])); ranks[w].append(int((first > first[t]).sum()))
        odds.append(float(np.logaddexp(first[words["green"][0]], first[words["Green"][0]]) - np.logaddexp(first[words["red"][0]], first[words["Red"][0]])))
    out[c] = {w: {"mean_logprob": float(np.mean(lps[w])), "median_rank": float(np.median(ranks[w])), "max_rank": int(np.max(ranks[w]))} for w in words}
    out[c]["log_odds_green_vs_red"] = {"mean": float(np.mean(odds)), "min": float(np.min(odds)), "max": float(np.max(odds)), "n_green_gt_red": int(sum(o > 0 for o in odds)), "n": len(odds)}
json.dump(out, open(str(Path(__file__).resolve().parent / "slot.json"), "w"), indent=1); print(json.dumps(out, indent=1))
