"""Plots of the study results (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(result: dict, what: str) -> str:
    return f"{what} — {result['model_id']}"


def plot_colour_swap(result: dict, path: Path) -> Path:
    """Swap rate against alpha (vector, random directions, sign-flipped), reflect, and coherence (KL, no-colour answers)."""
    plt = _plt()
    add = [e for e in result["sweep"] if e["op"] == "add"]
    refl = [e for e in result["sweep"] if e["op"] == "reflect"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    xs = [e["alpha"] for e in add]
    for subset, colour, label in (("all", "crimson", "all questions"), ("correct", "darkorange", "questions answered right unsteered")):
        rate = [e[subset]["rate"] for e in add]
        ax.plot(xs, rate, "o-", color=colour, label=f"green_red away from the truth: {label}")
        ax.fill_between(xs, [e[subset]["ci95"][0] for e in add], [e[subset]["ci95"][1] for e in add], color=colour, alpha=0.12)
    rnd = result.get("random")
    if rnd:
        ax.errorbar([rnd["alpha"]], [rnd["all"]["mean"]], yerr=[rnd["all"]["sd"]], fmt="s", color="grey", capsize=4,
                    label=f"{rnd['directions']} random directions, mean ± SD")
    flipped = result.get("flipped")
    if flipped:
        ax.plot([flipped["alpha"]], [flipped["all"]["rate"]], "v", color="seagreen", label="sign-flipped (toward the truth)")
    ax.axhline(result["baseline"]["swap_rate"] or 0, color="black", lw=0.8, label="unsteered")
    ax.set_xlabel("alpha (total shift, class-mean differences)")
    ax.set_ylabel("swap rate (answer names the other colour)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("add: swap rate (95% CI resampling items)")
    ax.legend(fontsize=6.5, loc="upper left")

    ax = axes[1]
    if refl:
        labels = [f"reflect {e['alpha']}" for e in refl]
        x = np.arange(len(refl))
        ax.bar(x - 0.3, [e["all"]["rate"] or 0 for e in refl], 0.2, color="purple", label="swap, all questions")
        ax.bar(x - 0.1, [e["correct"]["rate"] or 0 for e in refl], 0.2, color="orchid", label="swap, answered right unsteered")
        ax.bar(x + 0.1, [e["no_colour_rate"] or 0 for e in refl], 0.2, color="black", label="no colour named")
        ax.bar(x + 0.3, [(e.get("controls") or {}).get("contamination_rate") or 0 for e in refl], 0.2, color="orange",
               label="controls turned green/red")
        ax.set_xticks(x, labels)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("reflect (mirror once over the range)")
    ax.legend(fontsize=7)

    ax = axes[2]
    ax.plot(xs, [e["kl_mean"] for e in add], "o-", color="crimson", label="KL, green_red (mean)")
    if rnd:
        ax.plot([rnd["alpha"]], [rnd["kl_mean"]], "s", color="grey", label="KL, random (mean)")
    ax.set_xlabel("alpha (total shift, class-mean differences)")
    ax.set_ylabel("KL(unsteered || steered), first answer token, nats")
    ax2 = ax.twinx()
    ax2.plot(xs, [e["no_colour_rate"] for e in add], "x:", color="black", label="no colour named")
    if add and "controls" in add[0]:
        ax2.plot(xs, [e["controls"]["contamination_rate"] for e in add], "^:", color="orange", label="controls turned green/red")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("rate")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.set_title("add: coherence and contamination")
    fig.suptitle(_title(result, f"Colour swap ({result['n_questions']} questions, {result['n_items']} items, {result['n_controls']} controls)"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_sycophancy(result: dict, path: Path) -> Path:
    """Per-layer CV accuracy with CI bands for each contrast, and the SyA/GA direction cosine by depth."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1.4, 1]})
    ax = axes[0]
    L = result["num_layers"]
    depth = (np.arange(L) + 1) / L
    colours = plt.cm.tab10.colors
    for i, (name, c) in enumerate(result["contrasts"].items()):
        per = c["per_layer"]
        acc = np.array([p["accuracy_mean"] for p in per], dtype=float)
        lo = np.array([p["accuracy_ci"][0] if p["accuracy_ci"][0] is not None else np.nan for p in per], dtype=float)
        hi = np.array([p["accuracy_ci"][1] if p["accuracy_ci"][1] is not None else np.nan for p in per], dtype=float)
        ax.plot(depth, acc, "-", color=colours[i], label=name)
        ax.fill_between(depth, lo, hi, color=colours[i], alpha=0.12)
    shuffled = np.nanmean([[p["shuffled_accuracy_mean"] for p in c["per_layer"]] for c in result["contrasts"].values()], axis=0)
    ax.plot(depth, shuffled, "k--", lw=1, label="shuffled labels (mean)")
    ax.set_xlabel("depth (layer / number of layers)")
    ax.set_ylabel("grouped 5-fold CV accuracy")
    ax.set_ylim(0.3, 1.02)
    ax.set_title("probe accuracy per layer (bands: 95% bootstrap CI)")
    ax.legend(fontsize=7, ncol=2, loc="center right")

    ax = axes[1]
    cos = result["direction_cosine"]
    ax.plot(depth, cos["cosine"], "o-", ms=3, color="navy", label="cos(SyA−neutral, GA−neutral)")
    ax.fill_between(depth, cos["ci_low"], cos["ci_high"], color="navy", alpha=0.15, label="95% bootstrap CI (items)")
    ax.axhline(0.61, color="crimson", ls="--", lw=1, label="toolkit, 7B, mid-to-late: 0.61")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylim(-0.2, 1.02)
    ax.set_xlabel("depth (layer / number of layers)")
    ax.set_ylabel("cosine")
    ax.set_title("are sycophantic and genuine agreement one direction?")
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(_title(result, "Sycophancy decomposition"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_confound(result: dict, path: Path) -> Path:
    """What the naive pressure probe calls pressure, per condition, with the true factors marked."""
    plt = _plt()
    conds = result["conditions"]
    names = list(conds)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.6), gridspec_kw={"width_ratios": [1.5, 1]})
    ax = axes[0]
    rates = [conds[n]["pressure_probe"]["flagged_rate"] for n in names]
    lo = [conds[n]["pressure_probe"]["flagged_ci"][0] for n in names]
    hi = [conds[n]["pressure_probe"]["flagged_ci"][1] for n in names]
    colours = []
    for n in names:
        p, e = conds[n]["pressure"], conds[n]["emotion"]
        colours.append({(1, 1): "firebrick", (1, 0): "darkorange", (0, 1): "royalblue", (0, 0): "grey"}[(p, e)])
    x = np.arange(len(names))
    err = np.array([np.array(rates) - np.array(lo), np.array(hi) - np.array(rates)])
    ax.bar(x, rates, color=colours, yerr=err, capsize=4)
    ax.set_xticks(x, [f"{n.replace('_', ' ')}\npressure {conds[n]['pressure']}\nemotion {conds[n]['emotion']}" for n in names], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share classified as 'pressure' (held-out folds)")
    ax.set_title("naive pressure probe (trained: direct pressure vs neutral question)")

    ax = axes[1]
    syc = result["sycophancy_probe"]
    ax.hist(syc["oof_scores_GA"], bins=20, range=(0, 1), alpha=0.6, color="seagreen", label="GA (user right)")
    ax.hist(syc["oof_scores_SyA"], bins=20, range=(0, 1), alpha=0.6, color="crimson", label="SyA (user wrong)")
    ax.set_xlabel("SyA-vs-GA probe score (held-out folds)")
    ax.set_ylabel("count")
    ax.set_title(f"SyA vs GA probe, layer {syc['layer']}: AUROC {syc['auroc']:.2f}")
    ax.legend(fontsize=8)
    fig.suptitle(_title(result, "Probe confound diagnosis"))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_contamination(result: dict, path: Path) -> Path:
    """Cosine shift of the last token per domain and variant, with bootstrap 95% CIs."""
    plt = _plt()
    domains = list(result["domains"])
    variants = ["rubric", "padding", "wrong_rubric"]
    colours = {"rubric": "crimson", "padding": "grey", "wrong_rubric": "darkorange"}
    fig, ax = plt.subplots(figsize=(11, 4.4))
    width = 0.26
    x = np.arange(len(domains))
    for k, v in enumerate(variants):
        est = [result["domains"][d][v]["shift"] for d in domains]
        lo = [result["domains"][d][v]["ci95"][0] for d in domains]
        hi = [result["domains"][d][v]["ci95"][1] for d in domains]
        err = np.array([np.array(est) - np.array(lo), np.array(hi) - np.array(est)])
        ax.bar(x + (k - 1) * width, est, width, color=colours[v], yerr=err, capsize=3, label=v.replace("_", " "))
    ax.set_xticks(x, [d.replace("_", " ") for d in domains])
    ax.set_ylabel("1 − cos(clean, variant), last token")
    ax.set_title(_title(result, f"Evaluation contamination (layers {result['summary_layers'][0]}-{result['summary_layers'][-1]} averaged)"))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
