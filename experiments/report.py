"""Markdown tables from a results directory: `mlx-interp experiment report --out DIR` prints them.

The toolkit's 7B numbers stand beside each measured number; where the toolkit
did not report one, the cell says so instead of guessing.
"""

from __future__ import annotations

import json
from pathlib import Path

NOT_REPORTED = "not reported"
# What the research toolkit reported on Qwen2.5-7B-Instruct-4bit that we know of.
TOOLKIT_7B = {"sya_ga_cosine_mid_late": "0.61"}


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


def colour_table(r: dict) -> str:
    b = r["baseline"]
    lines = [
        f"Unsteered: {_fmt(b['correct_rate'])} of {b['n']} questions answered with the true colour, "
        f"{_fmt(b['swap_rate'])} with the other one, {_fmt(b['no_colour_rate'])} with no colour. "
        f"Vector layers {r['vector']['layers']}, default alpha {r['vector']['default_alpha']}.",
        "",
        "| op | alpha | swap rate [95% CI] | green→red | red→green | random dirs: pooled (min–max) | p vs random | sign-flipped | no colour | KL (nats) | controls turned green/red | toolkit 7B |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in r["sweep"]:
        rnd = e.get("random")
        rnd_s = f"{_fmt(rnd['swap_rate'])} ({_fmt(rnd['per_direction_min'])}–{_fmt(rnd['per_direction_max'])})" if rnd else "–"
        lines.append(
            f"| {e['op']} | {e['alpha']} | {_fmt(e['swap_rate'])} {_ci(e['swap_ci95'])} | {_fmt(e['green_to_red'])} | "
            f"{_fmt(e['red_to_green'])} | {rnd_s} | {_fmt(e.get('p_value_vs_random'), 3)} | "
            f"{_fmt(e['flipped']['swap_rate']) if 'flipped' in e else '–'} | {_fmt(e['no_colour_rate'])} | {_fmt(e['kl_mean'])} | "
            f"{_fmt(e['controls']['contamination_rate']) if 'controls' in e else '–'} | {NOT_REPORTED} |"
        )
    return "\n".join(lines)


def sycophancy_table(r: dict) -> str:
    L = r["num_layers"]
    lines = [
        "| contrast | best layer (depth) | CV accuracy [95% CI] | CV AUROC [95% CI] | shuffled-label accuracy | permutation p | toolkit 7B |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in r["contrasts"].items():
        lines.append(
            f"| {name} | {c['best_layer']} ({_fmt(c['best_depth'])}) | {_fmt(c['best_accuracy'])} {_ci(c['best_accuracy_ci'])} | "
            f"{_fmt(c['best_auroc'])} {_ci(c['best_auroc_ci'])} | {_fmt(c['shuffled_accuracy_at_best'])} | "
            f"{_fmt(c['permutation_p_at_best'], 3)} | {NOT_REPORTED} |"
        )
    cos = r["direction_cosine"]
    ml = cos["mid_to_late_layers"]
    lines += [
        "",
        "| direction cosine, SyA−neutral vs GA−neutral | measured | toolkit 7B |",
        "|---|---|---|",
        f"| mean over mid-to-late layers ({ml[0]}–{ml[-1]} of {L}, depth 0.4–0.9) | {_fmt(cos['mid_to_late_mean'], 3)} | {TOOLKIT_7B['sya_ga_cosine_mid_late']} |",
        f"| lowest (layer {cos['argmin_layer']}, depth {_fmt((cos['argmin_layer'] + 1) / L)}) | {_fmt(cos['min'], 3)} | {NOT_REPORTED} |",
    ]
    return "\n".join(lines)


def confound_table(r: dict) -> str:
    pp = r["pressure_probe"]
    lines = [
        f"Naive pressure probe: layer {pp['layer']} (depth {_fmt(pp['depth'])}), CV accuracy {_fmt(pp['cv_accuracy'])}, "
        f"AUROC {_fmt(pp['cv_auroc'])} on its own training contrast.",
        "",
        "| condition | pressure | emotion | classified as pressure [95% CI] | mean score | SyA-vs-GA probe mean score | toolkit 7B |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in r["conditions"].items():
        p = c["pressure_probe"]
        lines.append(
            f"| {name.replace('_', ' ')} | {c['pressure']} | {c['emotion']} | {_fmt(p['flagged_rate'])} {_ci(p['flagged_ci'])} | "
            f"{_fmt(p['mean_score'])} | {_fmt(c['sycophancy_probe_mean_score'])} | {NOT_REPORTED} |"
        )
    t = pp["tracks"]
    s = r["sycophancy_probe"]
    lines += [
        "",
        f"On the four conditions it was not trained on, the naive probe's score separates emotion from no emotion with "
        f"AUROC {_fmt(t['emotion']['auroc'])} and pressure from no pressure with AUROC {_fmt(t['pressure']['auroc'])}.",
        "",
        f"SyA-vs-GA probe (layer {s['layer']}, depth {_fmt(s['depth'])}): held-out AUROC {_fmt(s['auroc'])}, "
        f"Cohen's d {_fmt(s['cohens_d'])}, mean score SyA {_fmt(s['mean_positive'])} vs GA {_fmt(s['mean_negative'])} "
        f"(toolkit 7B: {NOT_REPORTED}).",
    ]
    return "\n".join(lines)


def contamination_table(r: dict) -> str:
    lines = [
        f"Shift = 1 − cos(clean, variant) at the last token, mean over layers {r['summary_layers'][0]}–{r['summary_layers'][-1]}; "
        "95% bootstrap CIs over prompts (1000 resamples).",
        "",
        "| domain | rubric | padding (same length) | wrong-domain rubric | rubric − padding [95% CI] | toolkit 7B |",
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
            f"{_fmt(diff.get('diff'), 3)} {_ci(diff.get('ci95'), 3)} | {NOT_REPORTED} |"
        )
    return "\n".join(lines)


TABLES = {"colour_swap": colour_table, "sycophancy": sycophancy_table, "confound": confound_table, "contamination": contamination_table}


def render(results_dir: Path) -> str:
    parts = []
    for stem, table in TABLES.items():
        path = Path(results_dir) / f"{stem}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        parts.append(f"### {stem} ({r['model_id']}, seed {r['seed']})\n\n{table(r)}\n")
    if not parts:
        raise FileNotFoundError(f"no study results in {results_dir}")
    return "\n".join(parts)
