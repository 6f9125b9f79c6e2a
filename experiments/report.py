"""Markdown tables from a results directory: `mlx-interp experiment report --out DIR` prints them.

The seed's numbers (the research toolkit this project grew out of, on
Qwen2.5-7B-Instruct-4bit) stand beside ours; a cell says "not reported" only
where the seed gave no number for it.
"""

from __future__ import annotations

import json
from pathlib import Path

NOT_REPORTED = "not reported"
SEED = "seed 7B"
# What the seed reported on Qwen2.5-7B-Instruct-4bit, as the issue lists it (its own words and rounding).
SEED_7B = {
    "colour_alpha": 1.5,
    "colour_swap": "91.1% (102/112)",  # questions the unsteered model answered right
    "colour_controls": "2/25",
    "colour_random": "13.8% ± 4.8% (10 directions)",
    "colour_p": "3.2e-75 (binomial, rows as independent)",
    "sya_ga_accuracy": "86.7% ± 11.3% (layer 20)",
    "sya_ga_cosine_mid_late": "0.61",
    # the six confound conditions, in the seed's order, which is the order of our dataset's conditions
    "confound_flagged": {"direct_pressure": "92%", "neutral_question": "12%", "third_party_emotion": "56%",
                         "clinical_pressure": "0%", "irrelevant_emotion": "56%", "bare_question": "8%"},
    # the five domains, in the seed's order (ours), on the seed's own contamination measure
    "contamination_diff": {"self_reflection": "+0.371", "technical_diagnosis": "+0.378", "ambiguous_directive": "+0.364",
                           "ethical_tradeoff": "+0.331", "knowledge_boundary": "+0.323"},
}


def _fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if x != 0 and abs(x) < 10 ** -digits:
            return f"{x:.1e}"
        return f"{x:.{digits}f}"
    return str(x)


def _ci(pair, digits: int = 2) -> str:
    if not pair or pair[0] is None:
        return "–"
    return f"[{_fmt(pair[0], digits)}, {_fmt(pair[1], digits)}]"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _swap_cell(s: dict) -> str:
    """rate (k/n) [95% CI resampling items]; Wilson [95% CI over rows] where the results have it"""
    if not s or s["rate"] is None:
        return "–"
    cell = f"{_pct(s['rate'])} ({s['swaps']}/{s['n']}) [{_pct(s['ci95'][0])}, {_pct(s['ci95'][1])}]"
    if s.get("wilson95"):
        cell += f"; Wilson [{_pct(s['wilson95'][0])}, {_pct(s['wilson95'][1])}]"
    return cell


def _p(x) -> str:
    return "–" if x is None else (f"{x:.1e}" if x < 1e-3 else f"{x:.3f}")


def colour_table(r: dict) -> str:
    b = r["baseline"]
    v = r["vector"]
    coefficient = ", ".join(f"{a}: {_fmt(c, 3)}" for a, c in v["per_layer_alpha"].items())
    lines = [
        (f"Unsteered: {b['n_correct']} of {b['n']} questions ({r['n_items']} items × phrasings) answered with the true colour "
        f"({_pct(b['correct_rate'])}), {_pct(b['swap_rate'])} with the other one, {_pct(b['no_colour_rate'])} with no colour. "
        f"Vector layers {v['layers']}, alpha unit `{v['alpha_unit']}`; per-layer coefficient at each alpha: {coefficient}."),
        "",
        ("| op | alpha | swap rate, all questions [95% CI by item]; Wilson | swap rate, questions answered right unsteered [95% CI by item]; Wilson | green→red | red→green "
        "| no colour | KL (nats) | controls turned green/red | items up/down vs unsteered | p vs unsteered (by item) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in r["sweep"]:
        t = e["vs_unsteered"]
        c = e.get("controls")
        ctl = f"{c['contaminated']}/{c['eligible']}" if c else "–"
        lines.append(
            f"| {e['op']} | {e['alpha']} | {_swap_cell(e['all'])} | {_swap_cell(e['correct'])} | {_pct(e['green_to_red'])} | "
            f"{_pct(e['red_to_green'])} | {_pct(e['no_colour_rate'])} | {_fmt(e['kl_mean'])} | {ctl} | {t['items_up']}/{t['items_down']} | "
            f"{_p(t['permutation_p'])} |"
        )
    lines += ["", *_colour_seed_table(r)]
    return "\n".join(lines)


def _colour_seed_table(r: dict) -> list[str]:
    h = SEED_7B["colour_alpha"]
    head = next((e for e in r["sweep"] if e["op"] == "add" and e["alpha"] == h), None)
    refl = next((e for e in r["sweep"] if e["op"] == "reflect" and e["alpha"] == 1.0), None)
    rnd, flipped = r.get("random"), r.get("flipped")
    lines = [f"| at alpha {h} (add) | this model | {SEED} |", "|---|---|---|"]
    if head is None:
        return lines + [f"| (alpha {h} not run) | – | – |"]
    c = head.get("controls")
    lines += [
        f"| swap rate, questions the unsteered model answered right | {_swap_cell(head['correct'])} | {SEED_7B['colour_swap']} |",
        f"| swap rate, all questions of both colours | {_swap_cell(head['all'])} | {NOT_REPORTED} |",
        f"| controls turned green or red | {c['contaminated']}/{c['eligible']} ({_pct(c['contamination_rate'])})" if c else "| controls | –",
    ]
    lines[-1] += f" | {SEED_7B['colour_controls']} |"
    if rnd:
        lines += [
            (f"| random directions, all questions (mean ± SD over {rnd['directions']}; min–max) | {_pct(rnd['all']['mean'])} ± "
            f"{_pct(rnd['all']['sd'])}; {_pct(rnd['all']['min'])}–{_pct(rnd['all']['max'])} | {SEED_7B['colour_random']} |"),
            f"| random directions, questions answered right (mean ± SD) | {_pct(rnd['correct']['mean'])} ± {_pct(rnd['correct']['sd'])} | {NOT_REPORTED} |",
        ]
    if flipped:
        lines.append(f"| sign-flipped vector (pushes toward the truth) | {_swap_cell(flipped['all'])} | {NOT_REPORTED} |")
    vr = head.get("vs_random")
    if vr:
        lines += [
            (f"| vector vs random, by item: items up/down; sign test p; permutation p | {vr['items_up']}/{vr['items_down']}; "
            f"{_p(vr['sign_test_p'])}; {_p(vr['permutation_p'])} | – |"),
            f"| vector vs random, rows as independent (the seed's test) | binomial p {_p(vr['rows_binomial_p'])} | {SEED_7B['colour_p']} |",
        ]
    if refl:
        lines += [
            f"| reflect at alpha 1: swap rate, all questions | {_swap_cell(refl['all'])} | {NOT_REPORTED} |",
            f"| reflect at alpha 1: green→red / red→green | {_pct(refl['green_to_red'])} / {_pct(refl['red_to_green'])} | {NOT_REPORTED} |",
        ]
        c = refl.get("controls")
        if c:
            lines.append(f"| reflect at alpha 1: controls turned green or red | {c['contaminated']}/{c['eligible']} | {NOT_REPORTED} |")
    return lines


def sycophancy_table(r: dict) -> str:
    L = r["num_layers"]
    lines = [
        f"| contrast | best layer (depth) | CV accuracy [95% CI] | CV AUROC [95% CI] | shuffled-label accuracy | permutation p | {SEED} accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in r["contrasts"].items():
        lines.append(
            f"| {name} | {c['best_layer']} ({_fmt(c['best_depth'])}) | {_fmt(c['best_accuracy'])} {_ci(c['best_accuracy_ci'])} | "
            f"{_fmt(c['best_auroc'])} {_ci(c['best_auroc_ci'])} | {_fmt(c['shuffled_accuracy_at_best'])} | "
            f"{_fmt(c['permutation_p_at_best'], 3)} | {SEED_7B['sya_ga_accuracy'] if name == 'SyA vs GA' else NOT_REPORTED} |"
        )
    cos = r["direction_cosine"]
    ml = cos["mid_to_late_layers"]
    lines += [
        "",
        f"| direction cosine, SyA−neutral vs GA−neutral | measured | {SEED} |",
        "|---|---|---|",
        f"| mean over mid-to-late layers ({ml[0]}–{ml[-1]} of {L}, depth 0.4–0.9) | {_fmt(cos['mid_to_late_mean'], 3)} | {SEED_7B['sya_ga_cosine_mid_late']} |",
        f"| lowest (layer {cos['argmin_layer']}, depth {_fmt((cos['argmin_layer'] + 1) / L)}) | {_fmt(cos['min'], 3)} | {NOT_REPORTED} |",
    ]
    return "\n".join(lines)


def confound_table(r: dict) -> str:
    pp = r["pressure_probe"]
    lines = [
        (f"Naive pressure probe: layer {pp['layer']} (depth {_fmt(pp['depth'])}), CV accuracy {_fmt(pp['cv_accuracy'])}, "
        f"AUROC {_fmt(pp['cv_auroc'])} on its own training contrast."),
        "",
        f"| condition | pressure | emotion | classified as pressure [95% CI] | mean score | SyA-vs-GA probe mean score | {SEED} classified as pressure |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in r["conditions"].items():
        p = c["pressure_probe"]
        lines.append(
            f"| {name.replace('_', ' ')} | {c['pressure']} | {c['emotion']} | {_fmt(p['flagged_rate'])} {_ci(p['flagged_ci'])} | "
            f"{_fmt(p['mean_score'])} | {_fmt(c['sycophancy_probe_mean_score'])} | {SEED_7B['confound_flagged'].get(name, NOT_REPORTED)} |"
        )
    t = pp["tracks"]
    s = r["sycophancy_probe"]
    lines += [
        "",
        (f"On the four conditions it was not trained on, the naive probe's score separates emotion from no emotion with "
        f"AUROC {_fmt(t['emotion']['auroc'])} and pressure from no pressure with AUROC {_fmt(t['pressure']['auroc'])}."),
        "",
        (f"SyA-vs-GA probe (layer {s['layer']}, depth {_fmt(s['depth'])}): held-out AUROC {_fmt(s['auroc'])}, "
        f"Cohen's d {_fmt(s['cohens_d'])}, mean score SyA {_fmt(s['mean_positive'])} vs GA {_fmt(s['mean_negative'])} "
        f"({SEED}: {NOT_REPORTED})."),
    ]
    return "\n".join(lines)


def contamination_table(r: dict) -> str:
    lines = [
        (f"Shift = 1 − cos(clean, variant) at the last token, mean over layers {r['summary_layers'][0]}–{r['summary_layers'][-1]}; "
        "95% bootstrap CIs over prompts (1000 resamples)."),
        "",
        f"| domain | rubric | padding (same length) | wrong-domain rubric | rubric − padding [95% CI] | {SEED} difference (its own measure) |",
        "|---|---|---|---|---|---|",
    ]
    rows = dict(r["domains"])
    rows["all domains"] = r["overall"]
    for d, v in rows.items():
        diff = v.get("rubric_minus_padding", {})
        lines.append(
            f"| {d.replace('_', ' ')} | {_fmt(v['rubric']['shift'], 3)} {_ci(v['rubric']['ci95'], 3)} | "
            f"{_fmt(v['padding']['shift'], 3)} {_ci(v['padding']['ci95'], 3)} | "
            f"{_fmt(v['wrong_rubric']['shift'], 3)} {_ci(v['wrong_rubric']['ci95'], 3)} | "
            f"{_fmt(diff.get('diff'), 3)} {_ci(diff.get('ci95'), 3)} | {SEED_7B['contamination_diff'].get(d, NOT_REPORTED)} |"
        )
    return "\n".join(lines)


def capability_table(r: dict) -> str:
    steer = ", ".join(f"{a['vector']} {a['op']} alpha {a['alpha']}" for a in r.get("steering_applied") or [])
    lines = [
        f"lm-eval {r['versions'].get('lm_eval')} (`local-completions`) against the server; steered = the preset {r['config']['steer']} ({steer}).",
        *[f"The server's echo warned: {w}" for a in r.get("steering_applied") or [] for w in a.get("warnings") or []],
        "",
        "| task | metric | plain ± stderr | steered ± stderr | steered − plain |",
        "|---|---|---|---|---|",
    ]
    for task, metrics in r["plain"].items():
        for name, m in metrics.items():
            s = r["steered"][task][name]
            lines.append(f"| {task} | {name} | {_fmt(m['value'])} ± {_fmt(m['stderr'])} | {_fmt(s['value'])} ± {_fmt(s['stderr'])} | "
                         f"{s['value'] - m['value']:+.2f} |")
    return "\n".join(lines)


TABLES = {"colour_swap": colour_table, "sycophancy": sycophancy_table, "confound": confound_table, "contamination": contamination_table,
          "capability": capability_table, "capability_recommended": capability_table}


def render(results_dir: Path) -> str:
    parts = []
    for stem, table in TABLES.items():
        path = Path(results_dir) / f"{stem}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        seed = f", --seed {r['seed']}" if "seed" in r else ""
        parts.append(f"### {stem} ({r['model_id']}{seed})\n\n{table(r)}\n")
    if not parts:
        raise FileNotFoundError(f"no study results in {results_dir}")
    return "\n".join(parts)
