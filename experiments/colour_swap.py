"""Study 1: swap green and red answers with the green_red vector, against honest baselines.

For every colour question the vector is applied so that it pushes away from the
true colour (add with alpha > 0 on green questions, alpha < 0 on red ones: the
vector points green -> red), or `reflect` mirrors the colour once over the
layer range, which swaps both at once.

alpha is the contract's unit (api.md section 3): the total shift of the
residual stream across the steered layers, in units of the vector's class-mean
difference; the seed's working strength, 1.5, is the same number in this unit.

Baselines, at the headline alpha, on every question:
- random directions: each draw is one random unit direction shared by all the
  steered layers, scaled so that its accumulated push (the sum over layers of
  what is added) has the same norm as the vector's at that alpha;
- the sign-flipped vector (pushes toward the truth).
Controls (other colours, no colour) measure contamination: answers that become
green or red. Coherence: KL from the unsteered to the steered first-answer-token
distribution, and how often the answer names no colour at all.

Each item is asked in two phrasings, so statistics treat the item, not the row,
as the unit: intervals resample items, tests compare per-item rates.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mlx_interp.steering.analysis import binomial_test
from mlx_interp.steering.interventions import AlphaUnit, Intervention, Op

from .common import (
    COLOUR_CONTROLS,
    COLOUR_QUESTIONS,
    GREEN_RED_PAIRS,
    balanced_subset,
    read_jsonl,
    run_record,
)
from .decoding import chat_tokens, greedy_decode, kl_divergence
from .item_stats import clustered_rate_ci, items_of, paired_item_test

COLOURS = ("green", "red", "blue", "yellow", "white", "black", "orange", "purple", "brown", "pink", "grey", "gray")
COLOUR_PATTERN = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)
OPPOSITE = {"green": "red", "red": "green"}
# The answer slot: a short system instruction and an assistant opening that puts the
# colour in the first generated tokens, so 3 tokens suffice and KL is read where it matters.
SYSTEM_PROMPT = "Answer with one word."
ANSWER_PREFIX = "The answer is"
SEED_ALPHA = 1.5  # the seed's working strength; the contract's unit was chosen so it carries over unchanged


@dataclass
class ColourConfig:
    # total shift across the layers, in class-mean differences. The committed run (docs/results/) is this default;
    # on a 2-core CPU 10 random directions on every question leave room for one add alpha.
    add_alphas: tuple[float, ...] = (SEED_ALPHA,)
    # 1 = mirror the colour once about the midpoint; 3 = a harder mirror. As served (the whole prompt steered) neither
    # swaps both ways on the default model: bench/green_red_sweep/README.md, prefix_check
    reflect_alphas: tuple[float, ...] = (1.0, 3.0)
    headline_alpha: float = SEED_ALPHA  # where the random and sign-flipped baselines run
    flipped: bool = True  # run the sign-flipped baseline
    n_random: int = 10
    max_questions: int | None = None  # None: all
    max_controls: int | None = None
    max_tokens: int = 3
    seed: int = 0
    layers: tuple[int, ...] | None = None  # None: the vector's recommended layers
    n_permutations: int = 10000
    n_bootstrap: int = 2000


def first_colour(text: str) -> str:
    """The first colour word in an answer, or "other"."""
    m = COLOUR_PATTERN.search(text)
    if not m:
        return "other"
    word = m.group(1).lower()
    return "grey" if word == "gray" else word


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def swap_p_value(k: int, n: int, k_random: int, n_random: int) -> float:
    """One-sided binomial p that k of n swaps beat the random-direction rate, rows taken as independent.

    This is the seed's kind of test; it overstates the evidence when rows come in
    pairs of phrasings (see paired_item_test). The random rate is add-one smoothed.
    """
    p0 = (k_random + 1) / (n_random + 2)
    return binomial_test(k, n, p0, alternative="greater")


def matched_random_directions(directions: np.ndarray, layers, n: int, seed: int) -> list[np.ndarray]:
    """n random (L, D) directions, each one unit direction shared by `layers`, norm-matched to `directions`.

    Row l of a draw is u·|v_l|·k with k = |Σ v_l| / Σ |v_l| (sums over `layers`), so the
    draw keeps the vector's per-layer profile and Σ_l row_l = u·|Σ_l v_l|: added with
    the vector's per-layer coefficient, its accumulated push has exactly the norm of
    the vector's. Layers outside `layers` stay zero.
    """
    layers = list(layers)
    v = directions[layers].astype(np.float64)
    norms = np.linalg.norm(v, axis=1)
    k = np.linalg.norm(v.sum(axis=0)) / norms.sum()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = rng.standard_normal(directions.shape[1])
        u /= np.linalg.norm(u)
        d = np.zeros(directions.shape, np.float32)
        d[layers] = (norms[:, None] * k * u[None, :]).astype(np.float32)
        out.append(d)
    return out


def fixed_coefficient_add(name: str, directions: np.ndarray, coefficient: float, layers) -> Intervention:
    """An add whose per-layer coefficient is `coefficient` itself (no unit conversion)."""
    return Intervention(name=name, directions=directions, op=Op.ADD, alpha=float(coefficient), layers=tuple(layers),
                        alpha_unit=AlphaUnit.PER_LAYER)


@dataclass
class _Row:
    kind: str  # "question" | "control"
    index: int  # row in the questions or controls file
    condition: str  # baseline, vector, flipped, random-k
    op: str
    alpha: float


def run(lm, vector, out_dir: Path | None = None, config: ColourConfig | None = None, progress: bool = True) -> dict:
    config = config or ColourConfig()
    questions = balanced_subset(read_jsonl(COLOUR_QUESTIONS), config.max_questions)
    controls = read_jsonl(COLOUR_CONTROLS)[: config.max_controls]
    layers = tuple(config.layers or vector.recommended_layers)
    answer_prefix = lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    q_tokens = [chat_tokens(lm, q["question"], SYSTEM_PROMPT) + answer_prefix for q in questions]
    c_tokens = [chat_tokens(lm, c["question"], SYSTEM_PROMPT) + answer_prefix for c in controls]

    def add(alpha):
        return vector.intervention(alpha=float(alpha), op="add", layers=layers)

    def reflect(alpha):
        return vector.intervention(alpha=float(alpha), op="reflect", layers=layers)

    # the random draws are added with the vector's own per-layer coefficient at the headline alpha
    headline = add(config.headline_alpha)
    randoms = matched_random_directions(vector.directions, layers, config.n_random, config.seed)

    prompts, ivs, meta = [], [], []

    def row(tokens, interventions, m):
        prompts.append(tokens), ivs.append(tuple(interventions)), meta.append(m)

    for i, (q, toks) in enumerate(zip(questions, q_tokens)):
        away = 1.0 if q["answer"] == "green" else -1.0  # sign that pushes away from the truth
        row(toks, (), _Row("question", i, "baseline", "none", 0.0))
        for a in config.add_alphas:
            row(toks, (add(away * a),), _Row("question", i, "vector", "add", a))
        for r in config.reflect_alphas:
            row(toks, (reflect(r),), _Row("question", i, "vector", "reflect", r))
        h = config.headline_alpha
        if config.flipped:
            row(toks, (add(-away * h),), _Row("question", i, "flipped", "add", h))
        for k, d in enumerate(randoms):
            row(toks, (fixed_coefficient_add(f"random{k}", d, away * headline.per_layer_alpha, layers),),
                _Row("question", i, f"random-{k}", "add", h))
    for j, toks in enumerate(c_tokens):
        row(toks, (), _Row("control", j, "baseline", "none", 0.0))
        for a in config.add_alphas:
            sign = 1.0 if j % 2 == 0 else -1.0  # controls have no true side: half get each sign
            row(toks, (add(sign * a),), _Row("control", j, "vector", "add", a))
        for r in config.reflect_alphas:
            row(toks, (reflect(r),), _Row("control", j, "vector", "reflect", r))

    decoded = greedy_decode(lm, prompts, ivs, max_tokens=config.max_tokens, progress=progress)
    answers = [first_colour(d.text) for d in decoded]
    base_of = {(m.kind, m.index): n for n, m in enumerate(meta) if m.condition == "baseline"}

    records = []
    for n, m in enumerate(meta):
        base = base_of[(m.kind, m.index)]
        src = questions[m.index] if m.kind == "question" else controls[m.index]
        records.append({
            "kind": m.kind, "item": src.get("group", src.get("id", m.index)), "row": m.index, "condition": m.condition,
            "op": m.op, "alpha": m.alpha, "truth": src["answer"], "answer": answers[n], "baseline_answer": answers[base],
            "text": decoded[n].text, "kl": kl_divergence(decoded[base].first_logprobs, decoded[n].first_logprobs),
        })
    summary = summarise(records, config)
    per_layer = {a: add(a).per_layer_alpha for a in config.add_alphas}
    result = {
        **run_record(lm, "colour_swap", config.seed, [COLOUR_QUESTIONS, COLOUR_CONTROLS, GREEN_RED_PAIRS], asdict(config)),
        "vector": {"name": vector.name, "sha256": vector.sha256, "layers": list(layers), "alpha_unit": vector.alpha_unit.value,
                   "per_layer_alpha": {str(a): c for a, c in per_layer.items()}, "dataset_hash": vector.metadata.get("dataset_hash")},
        "prompt": {"system": SYSTEM_PROMPT, "answer_prefix": ANSWER_PREFIX, "max_tokens": config.max_tokens},
        "n_questions": len(questions),
        "n_items": len({r["item"] for r in records if r["kind"] == "question"}),
        "n_controls": len(controls),
        **summary,
        "records": records,
    }
    if out_dir is not None:
        from .common import write_results
        from .plotting import plot_colour_swap

        write_results(out_dir, "colour_swap", result)
        plot_colour_swap(result, Path(out_dir) / "colour_swap.png")
    return result


# -- summary ------------------------------------------------------------------------------------


def _swapped(r: dict) -> bool:
    return r["answer"] == OPPOSITE.get(r["truth"])


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _item_rates(rows: list[dict], items: list) -> np.ndarray:
    """Per item (in `items` order), the share of its rows that swapped; NaN where it has none."""
    by = items_of(rows)
    return np.array([np.mean([_swapped(r) for r in by[i]]) if by.get(i) else np.nan for i in items])


def swap_stats(rows: list[dict], config: ColourConfig, seed_offset: int = 0) -> dict:
    """Swap rate on all rows and on rows the unsteered model got right: an interval resampling items
    (ci95, the honest one when an item's two phrasings agree) and Wilson's over rows (wilson95)."""
    out = {}
    for subset, chosen in (("all", rows), ("correct", [r for r in rows if r["baseline_answer"] == r["truth"]])):
        by = items_of(chosen)
        hits = np.array([sum(_swapped(r) for r in v) for v in by.values()])
        totals = np.array([len(v) for v in by.values()])
        k, n = int(hits.sum()), int(totals.sum())
        out[subset] = {"swaps": k, "n": n, "n_items": len(by), "rate": _rate(k, n),
                       "ci95": clustered_rate_ci(hits, totals, config.n_bootstrap, config.seed + seed_offset),
                       "wilson95": list(wilson_interval(k, n))}  # rows as independent: narrower than ci95 when phrasings agree
    return out


def summarise(records: list[dict], config: ColourConfig) -> dict:
    """Rates, baselines and item-level tests; separated from run() so it can be checked on constructed records."""
    qs = [r for r in records if r["kind"] == "question"]
    cs = [r for r in records if r["kind"] == "control"]
    baseline = [r for r in qs if r["condition"] == "baseline"]
    items = list(items_of(baseline))
    base_rates = _item_rates(baseline, items)
    out = {
        "baseline": {
            "n": len(baseline),
            "n_correct": sum(r["answer"] == r["truth"] for r in baseline),
            "correct_rate": _rate(sum(r["answer"] == r["truth"] for r in baseline), len(baseline)),
            "swap_rate": _rate(sum(_swapped(r) for r in baseline), len(baseline)),
            "no_colour_rate": _rate(sum(r["answer"] == "other" for r in baseline), len(baseline)),
        },
        "sweep": [],
    }
    rand_all = [r for r in qs if r["condition"].startswith("random-")]
    if rand_all:
        out["random"] = _random_summary(rand_all, items, config)
    flipped = [r for r in qs if r["condition"] == "flipped"]
    if flipped:
        out["flipped"] = {"alpha": config.headline_alpha, **swap_stats(flipped, config)}
    for op, alphas in (("add", config.add_alphas), ("reflect", config.reflect_alphas)):
        for a in alphas:
            vec = [r for r in qs if r["condition"] == "vector" and r["op"] == op and r["alpha"] == a]
            if not vec:
                continue
            entry = {
                "op": op, "alpha": a, **swap_stats(vec, config, seed_offset=1),
                "green_to_red": _rate(sum(_swapped(r) for r in vec if r["truth"] == "green"), sum(r["truth"] == "green" for r in vec)),
                "red_to_green": _rate(sum(_swapped(r) for r in vec if r["truth"] == "red"), sum(r["truth"] == "red" for r in vec)),
                "kept_truth_rate": _rate(sum(r["answer"] == r["truth"] for r in vec), len(vec)),
                "no_colour_rate": _rate(sum(r["answer"] == "other" for r in vec), len(vec)),
                "kl_mean": float(np.mean([r["kl"] for r in vec])),
            }
            rates = _item_rates(vec, items)
            entry["vs_unsteered"] = asdict(paired_item_test(rates - base_rates, config.n_permutations, config.seed))
            if rand_all and op == "add" and a == config.headline_alpha:
                rand_rates = np.nanmean(np.stack([_item_rates(v, items) for v in _by_direction(rand_all).values()]), axis=0)
                entry["vs_random"] = asdict(paired_item_test(rates - rand_rates, config.n_permutations, config.seed))
                k_r = sum(_swapped(r) for r in rand_all)
                entry["vs_random"]["rows_binomial_p"] = swap_p_value(entry["all"]["swaps"], entry["all"]["n"], k_r, len(rand_all))
            ctl = [r for r in cs if r["condition"] == "vector" and r["op"] == op and r["alpha"] == a]
            if ctl:
                eligible = [r for r in ctl if r["baseline_answer"] not in OPPOSITE]
                became = [r for r in eligible if r["answer"] in OPPOSITE]
                entry["controls"] = {"n": len(ctl), "eligible": len(eligible), "contaminated": len(became),
                                     "contamination_rate": _rate(len(became), len(eligible)),
                                     "kl_mean": float(np.mean([r["kl"] for r in ctl]))}
            out["sweep"].append(entry)
    return out


def _by_direction(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r["condition"], []).append(r)
    return out


def _random_summary(rows: list[dict], items: list, config: ColourConfig) -> dict:
    per_dir = _by_direction(rows)
    all_rates = [sum(_swapped(r) for r in v) / len(v) for v in per_dir.values()]
    correct_rates = []
    for v in per_dir.values():
        ok = [r for r in v if r["baseline_answer"] == r["truth"]]
        if ok:
            correct_rates.append(sum(_swapped(r) for r in ok) / len(ok))
    def sd(x: list) -> float:
        return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0

    return {
        "alpha": config.headline_alpha,
        "directions": len(per_dir),
        "rows_per_direction": len(next(iter(per_dir.values()))),
        "all": {"mean": float(np.mean(all_rates)), "sd": sd(all_rates), "min": float(min(all_rates)), "max": float(max(all_rates)),
                "per_direction": all_rates},
        "correct": {"mean": float(np.mean(correct_rates)) if correct_rates else None, "sd": sd(correct_rates),
                    "per_direction": correct_rates},
        "kl_mean": float(np.mean([r["kl"] for r in rows])),
        "no_colour_rate": _rate(sum(r["answer"] == "other" for r in rows), len(rows)),
    }
