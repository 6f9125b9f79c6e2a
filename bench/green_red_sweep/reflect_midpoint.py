"""Issue 8: can reflect at alpha 1 swap green and red both ways? Two repairs tried, measured on the sweep's subset.

1. The shipped green_red direction, mirrored about a midpoint measured WHERE IT IS USED (chat-formatted
   colour questions in the study's prompt) instead of the extraction midpoint (raw "The colour of the car is
   red" text): per layer, the mean projection of chat prompts of green things + red things + neutral controls,
   (a) at the answer position (last prompt token), (b) over every steered prompt position, (c) over the
   common tail after the question (end of turn, assistant header, "The answer is").
2. A vector extracted from chat-formatted contrast data (chat_data.py: 20 new green things vs 20 new red
   things, none of them an item of the study, in the study's prompt): red minus green class means
   (a) at the answer position, (b) averaged over the question's tokens (where the object noun is);
   midpoints from the same data. Reflect alpha 1 and add +-1.5 with it.

The calibration data for both never touch the 60 evaluation questions nor the 16 controls of the subset
(controls 16-29 serve as neutral rows). Scoring, prompt, decoding and coherence: sweep.py's Scorer and
summarise_rows, on sweep.py's subset (first 30 green + 30 red questions, first 16 controls).

    python bench/green_red_sweep/reflect_midpoint.py --part analyse     # projections only (fast)
    python bench/green_red_sweep/reflect_midpoint.py --part decode      # + the decoded settings
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from chat_data import GREEN_OBJECTS, RED_OBJECTS, SUBSET_CONTROLS, train_rows  # noqa: E402
from sweep import Scorer, summarise_rows  # noqa: E402

from experiments.artifacts import vector_for  # noqa: E402
from experiments.colour_swap import ANSWER_PREFIX, SYSTEM_PROMPT, ColourConfig, first_colour, wilson_interval  # noqa: E402
from experiments.common import COLOUR_CONTROLS, COLOUR_QUESTIONS, balanced_subset, read_jsonl  # noqa: E402
from experiments.decoding import chat_tokens, kl_divergence  # noqa: E402
from mlx_interp.steering.calibration import is_coherent  # noqa: E402
from mlx_interp.steering.capture import capture_hidden_states  # noqa: E402
from mlx_interp.steering.extraction import vector_from_states  # noqa: E402
from mlx_interp.steering.interventions import Intervention  # noqa: E402
from mlx_interp.steering.model import load_model  # noqa: E402

OUT = HERE / "reflect_midpoint.json"
OUT_IS = HERE / "reflect_midpoint_is.json"
RANGES = {"12-17": list(range(12, 18)), "8-13": list(range(8, 14)), "4-10": list(range(4, 11)),
          "18-23": list(range(18, 24))}
# where held-out green and red questions DO separate at the answer slot (layers >= 22; see analysis)
LATE = {"22-27": list(range(22, 28)), "24-29": list(range(24, 30))}


def spans(token_lists):
    """(common prefix length, common suffix length) over all prompts: the question lies between them."""
    first = token_lists[0]
    p = min(len(t) for t in token_lists)
    for t in token_lists[1:]:
        k = 0
        while k < p and t[k] == first[k]:
            k += 1
        p = k
    s = min(len(t) for t in token_lists) - p
    for t in token_lists[1:]:
        k = 0
        while k < s and t[-1 - k] == first[-1 - k]:
            k += 1
        s = k
    return p, s


def reduce_states(lm, token_lists, prefix_len, suffix_len, units):
    """Per prompt: last-position states (L, D), mean over the question span (L, D), mean over the tail (L, D),
    and for each unit-direction set in `units` the mean projection over all steered positions and over the
    tail (L,). Steered positions are those after the shared prefix (greedy_decode runs the prefix unsteered)."""
    last, qmean, tmean = [], [], []
    proj = {k: {"steered": [], "tail": [], "question": []} for k in units}
    for toks in token_lists:
        (H,) = capture_hidden_states(lm, [toks], position="all")  # (L, T, D)
        T = H.shape[1]
        q0, q1 = prefix_len, T - suffix_len
        last.append(H[:, -1]); qmean.append(H[:, q0:q1].mean(1)); tmean.append(H[:, q1:].mean(1))
        for k, U in units.items():
            P = np.einsum("ltd,ld->lt", H.astype(np.float64), U)
            proj[k]["steered"].append(P[:, prefix_len:].mean(1))
            proj[k]["tail"].append(P[:, q1:].mean(1))
            proj[k]["question"].append(P[:, q0:q1].mean(1))
    return (np.stack(last), np.stack(qmean), np.stack(tmean),
            {k: {s: np.stack(v) for s, v in d.items()} for k, d in proj.items()})


def unit(D):
    D = D.astype(np.float64)
    return D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-12)


def gap_stats(p_red, p_green, norm, midpoint):
    """Held-out separation on one direction: gap in class-mean differences of the vector, d', and how often each
    class sits on its own side of the midpoint, per layer."""
    gap = (p_red.mean(0) - p_green.mean(0)) / norm
    sd = np.sqrt((p_red.var(0) + p_green.var(0)) / 2) / norm
    return {"gap": gap.round(3).tolist(), "d_prime": (gap / np.maximum(sd, 1e-9)).round(2).tolist(),
            "red_side_red": ((p_red > midpoint).mean(0)).round(2).tolist(),
            "green_side_green": ((p_green < midpoint).mean(0)).round(2).tolist(),
            "red_rel_mid": ((p_red.mean(0) - midpoint) / norm).round(3).tolist(),
            "green_rel_mid": ((p_green.mean(0) - midpoint) / norm).round(3).tolist()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="decode", choices=("analyse", "decode", "extra"),
                    help="extra: only the follow-up settings, into reflect_midpoint_extra.json")
    ap.add_argument("--slot", default="quote", choices=("quote", "is"),
                    help="answer position: the ' \"' the model always answers first (default), or the prompt's last token")
    ap.add_argument("--only", default=None, help="comma list of setting tags to run (prefix match)")
    args = ap.parse_args()
    t0 = time.time()
    lm = load_model("default")
    vec = vector_for(lm)
    cfg = ColourConfig()
    prefix = lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    toks = lambda q: chat_tokens(lm, q, SYSTEM_PROMPT) + prefix  # noqa: E731
    # The unsteered model always opens its answer with ' "' (slot.py), so the colour is predicted at that token:
    # "the answer position" below is the ' "' after the prompt (greedy decoding steers it like any generated token).
    slot = lm.tokenizer.encode(' "', add_special_tokens=False) if args.slot == "quote" else []
    rtoks = lambda q: toks(q) + slot  # noqa: E731

    questions = balanced_subset(read_jsonl(COLOUR_QUESTIONS), 60)
    controls = read_jsonl(COLOUR_CONTROLS)[:SUBSET_CONTROLS]
    train = train_rows()
    q_tok = [toks(q["question"]) for q in questions]
    c_tok = [toks(c["question"]) for c in controls]
    tr_tok = {k: [rtoks(q) for q in v] for k, v in train.items()}
    qr_tok = [rtoks(q["question"]) for q in questions]
    all_tok = qr_tok + [rtoks(c["question"]) for c in controls] + sum(tr_tok.values(), [])
    P, S = spans(all_tok)
    print(f"shared prefix {P} tokens, shared tail {S} tokens: {lm.tokenizer.decode(all_tok[0][-S:])!r}", flush=True)

    L = lm.num_layers
    U_ship = unit(vec.directions)
    n_ship = np.linalg.norm(vec.directions.astype(np.float64), axis=1)
    units = {"ship": U_ship}

    # -- train (calibration) data: states and shipped-direction projections ---------------------------------
    tr = {k: reduce_states(lm, v, P, S, units) for k, v in tr_tok.items()}
    print(f"captured train in {time.time() - t0:.0f}s", flush=True)
    ev = {c: reduce_states(lm, [t for t, q in zip(qr_tok, questions) if q["answer"] == c], P, S, units)
          for c in ("green", "red")}
    print(f"captured eval in {time.time() - t0:.0f}s", flush=True)

    def mean_proj(kind, U):  # per-layer mean projection over green + red + neutral train rows (classes weighted equally)
        if kind == "answer":
            return np.mean([np.einsum("nld,ld->nl", tr[k][0].astype(np.float64), U).mean(0) for k in tr], axis=0)
        key = {"steered": "steered", "tail": "tail"}[kind]
        return np.mean([tr[k][3]["ship"][key].mean(0) for k in tr], axis=0)

    mids = {"extraction": vec.midpoints.astype(np.float64),
            "chat-answer": mean_proj("answer", U_ship),
            "chat-steered": mean_proj("steered", U_ship),
            "chat-tail": mean_proj("tail", U_ship)}

    # -- chat-extracted vectors (red = positive, green = negative) ---------------------------------------------
    chat_vecs = {}
    for tag, idx in (("answer", 0), ("question", 1)):
        pos, neg = tr["red"][idx], tr["green"][idx]
        v = vector_from_states(pos, neg, f"green_red_chat_{tag}", model_id=lm.model_id, model_fingerprint=lm.fingerprint)
        # midpoint at the answer position from the same data (green + red classes), for both reads
        Uc = unit(v.directions)
        m_ans = (np.einsum("nld,ld->nl", tr["red"][0].astype(np.float64), Uc).mean(0)
                 + np.einsum("nld,ld->nl", tr["green"][0].astype(np.float64), Uc).mean(0)) / 2
        chat_vecs[tag] = {"vector": v, "unit": Uc, "norm": np.linalg.norm(v.directions.astype(np.float64), axis=1),
                          "mid_own": v.midpoints.astype(np.float64), "mid_answer": m_ans}

    analysis = {"answer_position": args.slot, "prefix_tokens": P, "tail_tokens": S, "tail_text": lm.tokenizer.decode(all_tok[0][-S:]),
                "n_train": {k: len(v) for k, v in train.items()}, "green_objects": GREEN_OBJECTS, "red_objects": RED_OBJECTS,
                "shipped": {}, "chat": {}}
    # shipped direction: where do held-out green/red questions sit, by read position
    for read, get in (("answer", lambda c: np.einsum("nld,ld->nl", ev[c][0].astype(np.float64), U_ship)),
                      ("question", lambda c: ev[c][3]["ship"]["question"]),
                      ("tail", lambda c: ev[c][3]["ship"]["tail"])):
        for mname in ("extraction", "chat-answer"):
            analysis["shipped"][f"{read} vs {mname} midpoint"] = gap_stats(get("red"), get("green"), n_ship, mids[mname])
    analysis["shipped"]["midpoints_minus_extraction_in_norms"] = {
        k: ((m - mids["extraction"]) / n_ship).round(3).tolist() for k, m in mids.items()}
    for tag, cv in chat_vecs.items():
        Uc, nc = cv["unit"], cv["norm"]
        d = {"recommended_layers": list(cv["vector"].recommended_layers),
             "norm_vs_shipped": (nc / n_ship).round(3).tolist(),
             "cos_with_shipped": np.einsum("ld,ld->l", Uc, U_ship).round(3).tolist(),
             "train_separation": np.round(cv["vector"].metadata["extra"]["separation"], 2).tolist()}
        for read, idx in (("answer", 0), ("question", 1)):
            pr = np.einsum("nld,ld->nl", ev["red"][idx].astype(np.float64), Uc)
            pg = np.einsum("nld,ld->nl", ev["green"][idx].astype(np.float64), Uc)
            mid = cv["mid_answer"] if read == "answer" else cv["mid_own"] if tag == "question" else \
                (np.einsum("nld,ld->nl", tr["red"][1].astype(np.float64), Uc).mean(0)
                 + np.einsum("nld,ld->nl", tr["green"][1].astype(np.float64), Uc).mean(0)) / 2
            d[f"heldout {read}"] = gap_stats(pr, pg, nc, mid)
        analysis["chat"][tag] = d

    def show(label, g):
        print(label, " ".join(f"{l}:{g['gap'][l]:+.2f}/{g['d_prime'][l]:+.1f}" for l in range(0, L, 2)), flush=True)

    for k, g in analysis["shipped"].items():
        if "gap" in g:
            show(f"shipped {k} gap/d'", g)
            print("   red rel mid", [round(x, 2) for x in g["red_rel_mid"][::2]], "green rel mid", [round(x, 2) for x in g["green_rel_mid"][::2]])
    for k, d in analysis["chat"].items():
        print(f"chat-{k}: layers {d['recommended_layers']} |v|/|v_ship| {d['norm_vs_shipped'][::3]} cos {d['cos_with_shipped'][::3]}")
        for read in ("answer", "question"):
            g = d[f"heldout {read}"]
            show(f"  held-out {read} gap/d'", g)
            print("   red on red side", g["red_side_red"][::3], "green on green side", g["green_side_green"][::3])
    results = {"analysis": analysis, "settings": [], "config": {"max_tokens": cfg.max_tokens, "n_green": 30, "n_red": 30,
                                                                "n_controls": len(controls)}}
    out = OUT if args.slot == "quote" else OUT_IS
    if args.part == "extra":
        out = HERE / "reflect_midpoint_extra.json"
    save = lambda: out.write_text(json.dumps(results, indent=1, default=float))  # noqa: E731
    save()
    if args.part == "analyse":
        return

    # -- decoding ------------------------------------------------------------------------------------------------
    sc = Scorer(lm, cfg)
    items = [("q", i, q["answer"], t) for i, (q, t) in enumerate(zip(questions, q_tok))] + \
            [("c", j, "control", t) for j, t in enumerate(c_tok)]
    base = sc.decode([t for *_, t in items], [()] * len(items))
    base_info = {}
    for (kind, i, truth, tk), d in zip(items, base):
        base_info[(kind, i)] = {"answer": first_colour(d.text), "text": d.text, "first": d.first_logprobs,
                                "logprob": sc.token_logprobs(tk, d.tokens)}
    print(f"baseline done {time.time() - t0:.0f}s", flush=True)

    def run(tag, iv_for, which=("green", "red", "control"), note=""):
        """iv_for(truth) -> the intervention for a row whose truth is truth (so add can push away from it)."""
        if args.only and not any(tag.startswith(o) for o in args.only.split(",")):
            return None
        chosen = [it for it in items if it[2] in which]
        t = time.time()
        dec = sc.decode([it[3] for it in chosen], [(iv_for(it[2]),) for it in chosen])
        rows = []
        for (kind, i, truth, tk), d in zip(chosen, dec):
            b = base_info[(kind, i)]
            lp = sc.token_logprobs(tk, d.tokens)
            drop = b["logprob"] - lp
            rows.append({"truth_kind": truth, "answer": first_colour(d.text), "text": d.text, "baseline_answer": b["answer"],
                         "logprob": lp, "lp_non_colour": sc.non_colour_logprob(tk, d.tokens), "drop": drop,
                         "coherent": bool(is_coherent(lp, drop)), "kl": kl_divergence(b["first"], d.first_logprobs)})
        s = {"tag": tag, "note": note, "seconds": round(time.time() - t, 1), **summarise_rows(rows)}
        g, r, c = s.get("green", {}), s.get("red", {}), s.get("control", {})
        for k, d in (("green", g), ("red", r)):
            if d:
                n = d["n"]; kk = round(d["swap_rate"] * n)
                d["swap_k"], d["swap_wilson95"] = kk, wilson_interval(kk, n)
        if c:
            elig = c["eligible"]; kk = round((c["contamination_rate"] or 0) * elig)
            c["turned_k"] = kk
        print(f"{tag:40s} g->r={g.get('swap_rate', float('nan')):.2f} r->g={r.get('swap_rate', float('nan')):.2f} "
              f"ctrl={c.get('turned_k', '-')}/{c.get('eligible', '-')} lp={s['logprob_per_token']:.2f} "
              f"coh={s['coherent']} ({s['seconds']}s) g:{g.get('samples', [''])[:2]} r:{r.get('samples', [''])[:2]}", flush=True)
        results["settings"].append(s)
        save()
        return s

    def reflect(D, mid, layers, alpha=1.0, key="x"):
        iv = Intervention(name="green_red", directions=D.astype(np.float32), op="reflect", alpha=alpha, layers=tuple(layers),
                          midpoints=np.asarray(mid, np.float32), key=key)
        return lambda truth: iv

    def add_away(v, alpha, layers):
        """+alpha on green rows (toward red), -alpha on red rows; controls get both in turn (reported separately)."""
        ivs = {s: v.intervention(alpha=s * alpha, op="add", layers=layers) for s in (1, -1)}
        return ivs

    D = vec.directions
    if args.part == "extra":
        # (a) reflect alpha 2 and 3 about the chat midpoints: does a midpoint measured in chat balance the strong setting?
        for mname in ("extraction", "chat-answer", "chat-steered"):
            for a in (2.0, 3.0):
                run(f"ship {mname} 12-17 a{a:g}", reflect(D, mids[mname], RANGES["12-17"], alpha=a, key=f"s-{mname}"))
        # (b) the chat directions pushed as hard as the shipped one: rows rescaled to the shipped vector's per-layer
        # norms, so alpha is in shipped class-mean differences (the shipped vector flips red->green at -0.75)
        for tag, cv in chat_vecs.items():
            Dn = (cv["unit"] * n_ship[:, None]).astype(np.float32)
            for a in (0.75, 1.5):
                for sign, truth in ((1, "green"), (-1, "red")):
                    iv = Intervention(name="chat", directions=Dn, op="add", alpha=sign * a, layers=tuple(RANGES["12-17"]),
                                      key=f"n-{tag}")
                    run(f"chat-{tag} norm-matched add{sign * a:+g} 12-17 {truth}", lambda t, iv=iv: iv, which=(truth, "control"))
        results["elapsed_s"] = round(time.time() - t0, 1)
        save()
        return
    # 1. shipped direction, midpoints measured on chat data
    run("ship extraction-mid 12-17 a1", reflect(D, mids["extraction"], RANGES["12-17"], key="s-e"), note="sanity: sweep had 0.30/0.03")
    for mname in ("chat-answer", "chat-steered", "chat-tail"):
        for rname, layers in RANGES.items():
            run(f"ship {mname} {rname} a1", reflect(D, mids[mname], layers, key=f"s-{mname}"))
    for rname, layers in LATE.items():
        run(f"ship chat-answer {rname} a1", reflect(D, mids["chat-answer"], layers, key="s-chat-answer"))
    # 2. chat-extracted vectors
    for tag, cv in chat_vecs.items():
        v, Dc = cv["vector"], cv["vector"].directions
        rec = list(v.recommended_layers)
        rr = {f"rec {rec[0]}-{rec[-1]}": rec, **RANGES, **LATE}
        for mname in ("mid_answer", "mid_own") if tag == "question" else ("mid_answer",):
            for rname, layers in rr.items():
                run(f"chat-{tag} {mname} {rname} a1", reflect(Dc, cv[mname], layers, key=f"c-{tag}-{mname}"))
        for rname, layers in (("rec", rec), ("12-17", RANGES["12-17"])):
            ivs = add_away(v, 1.5, layers)
            run(f"chat-{tag} add+1.5 {rname} green", lambda truth, ivs=ivs: ivs[1], which=("green", "control"))
            run(f"chat-{tag} add-1.5 {rname} red", lambda truth, ivs=ivs: ivs[-1], which=("red", "control"))
    results["elapsed_s"] = round(time.time() - t0, 1)
    save()


if __name__ == "__main__":
    main()
