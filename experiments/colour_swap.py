"""Study 1: swap green and red answers with the green_red vector, against honest baselines.

For every colour question the vector is applied so that it pushes away from the
true colour (add with alpha > 0 on green questions, alpha < 0 on red ones: the
vector points green -> red), or the reflect operation swaps both at once.
Baselines at every alpha: the sign-flipped vector (pushes toward the truth) and
random directions with the vector's norm at every steered layer. Controls
(other colours, no colour) measure contamination: answers that become green or
red. Coherence: KL from the unsteered to the steered first-answer-token
distribution, and how often the answer names no colour at all.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlx_interp.steering.analysis import binomial_test
from mlx_interp.steering.interventions import Intervention, Op

from .common import COLOUR_CONTROLS, COLOUR_QUESTIONS, GREEN_RED_PAIRS, balanced_subset, read_jsonl, run_record
from .decoding import chat_tokens, greedy_decode, kl_divergence

COLOURS = ("green", "red", "blue", "yellow", "white", "black", "orange", "purple", "brown", "pink", "grey", "gray")
COLOUR_PATTERN = re.compile(r"\b(" + "|".join(COLOURS) + r")\b", re.IGNORECASE)
OPPOSITE = {"green": "red", "red": "green"}
# The answer slot: a short system instruction and an assistant opening that puts the
# colour in the first generated token, so 3 tokens suffice and KL is read where it matters.
SYSTEM_PROMPT = "Answer with one word."
ANSWER_PREFIX = "The answer is"


@dataclass
class ColourConfig:
    add_alphas: tuple[float, ...] = (0.5, 1.0, 2.0)  # multiples of the vector's default alpha
    reflect_alphas: tuple[float, ...] = (1.0, 2.0)  # 1 = mirror about the midpoint
    n_random: int = 10
    max_questions: int | None = None  # None: all
    max_controls: int | None = None
    baseline_share: int = 2  # flipped and random baselines run on every n-th question
    max_tokens: int = 3
    seed: int = 0
    layers: tuple[int, ...] | None = None  # None: the vector's recommended layers


def first_colour(text: str) -> str:
    """The first colour word in an answer, or "other"."""
    m = COLOUR_PATTERN.search(text)
    if not m:
        return "other"
    word = m.group(1).lower()
    return "grey" if word == "gray" else word


def random_directions(reference: np.ndarray, layers, n: int, seed: int) -> list[np.ndarray]:
    """n random (L, D) directions whose rows at `layers` have the reference's norms (zero elsewhere)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = np.zeros_like(reference, dtype=np.float32)
        for l in layers:
            g = rng.standard_normal(reference.shape[1])
            d[l] = (g / np.linalg.norm(g) * np.linalg.norm(reference[l])).astype(np.float32)
        out.append(d)
    return out


def swap_p_value(k: int, n: int, k_random: int, n_random: int) -> float:
    """One-sided binomial p that k of n swaps beat the random-direction rate.

    The random rate is add-one smoothed, (k_random + 1) / (n_random + 2), so that
    a random baseline with no swaps at all does not make any single swap "significant".
    """
    p0 = (k_random + 1) / (n_random + 2)
    return binomial_test(k, n, p0, alternative="greater")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


@dataclass
class _Row:
    kind: str  # "question" | "control"
    item: int
    condition: str  # baseline, vector, flipped, random-k, reflect
    op: str
    alpha: float  # multiple of default alpha (add) or reflect strength


def run(lm, vector, out_dir: Path | None = None, config: ColourConfig = ColourConfig(), progress: bool = True) -> dict:
    questions = balanced_subset(read_jsonl(COLOUR_QUESTIONS), config.max_questions)
    controls = read_jsonl(COLOUR_CONTROLS)[: config.max_controls]
    layers = tuple(config.layers or vector.recommended_layers)
    base_alpha = vector.default_alpha
    answer_prefix = lm.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
    q_tokens = [chat_tokens(lm, q["question"], SYSTEM_PROMPT) + answer_prefix for q in questions]
    c_tokens = [chat_tokens(lm, c["question"], SYSTEM_PROMPT) + answer_prefix for c in controls]
    randoms = random_directions(vector.directions, layers, config.n_random, config.seed)

    def add(directions, alpha, name):
        return Intervention(name=name, directions=directions, op=Op.ADD, alpha=float(alpha), layers=layers)

    def reflect(alpha):
        return Intervention(name=vector.name, directions=vector.directions, op=Op.REFLECT, alpha=float(alpha),
                            layers=layers, midpoints=vector.midpoints, key=vector.sha256)

    prompts, ivs, meta = [], [], []
    for i, (q, toks) in enumerate(zip(questions, q_tokens)):
        away = 1.0 if q["answer"] == "green" else -1.0  # sign that pushes away from the truth
        prompts.append(toks), ivs.append(()), meta.append(_Row("question", i, "baseline", "none", 0.0))
        for m in config.add_alphas:
            a = away * m * base_alpha
            prompts.append(toks), ivs.append((add(vector.directions, a, vector.name),)), meta.append(_Row("question", i, "vector", "add", m))
            if i % config.baseline_share == 0:
                prompts.append(toks), ivs.append((add(vector.directions, -a, vector.name),)), meta.append(_Row("question", i, "flipped", "add", m))
                if randoms:
                    k = (i // config.baseline_share) % len(randoms)  # each random direction sees its own share of questions
                    prompts.append(toks), ivs.append((add(randoms[k], a, f"random{k}"),)), meta.append(_Row("question", i, f"random-{k}", "add", m))
        for r in config.reflect_alphas:
            prompts.append(toks), ivs.append((reflect(r),)), meta.append(_Row("question", i, "vector", "reflect", r))
    for j, toks in enumerate(c_tokens):
        prompts.append(toks), ivs.append(()), meta.append(_Row("control", j, "baseline", "none", 0.0))
        for m in config.add_alphas:
            # controls have no true side: half get each sign, so both directions are checked
            sign = 1.0 if j % 2 == 0 else -1.0
            prompts.append(toks), ivs.append((add(vector.directions, sign * m * base_alpha, vector.name),)), meta.append(_Row("control", j, "vector", "add", m))
        for r in config.reflect_alphas:
            prompts.append(toks), ivs.append((reflect(r),)), meta.append(_Row("control", j, "vector", "reflect", r))

    decoded = greedy_decode(lm, prompts, ivs, max_tokens=config.max_tokens, progress=progress)
    answers = [first_colour(d.text) for d in decoded]
    baseline_q = {m.item: n for n, m in enumerate(meta) if m.kind == "question" and m.condition == "baseline"}
    baseline_c = {m.item: n for n, m in enumerate(meta) if m.kind == "control" and m.condition == "baseline"}

    records = []
    for n, m in enumerate(meta):
        base = baseline_q[m.item] if m.kind == "question" else baseline_c[m.item]
        truth = questions[m.item]["answer"] if m.kind == "question" else controls[m.item]["answer"]
        records.append({
            "kind": m.kind, "item": m.item, "condition": m.condition, "op": m.op, "alpha": m.alpha,
            "truth": truth, "answer": answers[n], "baseline_answer": answers[base], "text": decoded[n].text,
            "kl": kl_divergence(decoded[base].first_logprobs, decoded[n].first_logprobs),
        })
    summary = summarise(records, config)
    result = {
        **run_record(lm, "colour_swap", config.seed, [COLOUR_QUESTIONS, COLOUR_CONTROLS, GREEN_RED_PAIRS], asdict(config)),
        "vector": {"name": vector.name, "sha256": vector.sha256, "layers": list(layers), "default_alpha": base_alpha,
                   "dataset_hash": vector.metadata.get("dataset_hash")},
        "prompt": {"system": SYSTEM_PROMPT, "answer_prefix": ANSWER_PREFIX, "max_tokens": config.max_tokens},
        "n_questions": len(questions),
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


def summarise(records: list[dict], config: ColourConfig) -> dict:
    """Rates per (op, alpha) and baselines; separated from run() so it can be checked on constructed records."""
    qs = [r for r in records if r["kind"] == "question"]
    cs = [r for r in records if r["kind"] == "control"]
    baseline = [r for r in qs if r["condition"] == "baseline"]
    out = {
        "baseline": {
            "n": len(baseline),
            "correct_rate": _rate(sum(r["answer"] == r["truth"] for r in baseline), len(baseline)),
            "swap_rate": _rate(sum(r["answer"] == OPPOSITE[r["truth"]] for r in baseline), len(baseline)),
            "no_colour_rate": _rate(sum(r["answer"] == "other" for r in baseline), len(baseline)),
        },
        "sweep": [],
    }
    for op, alphas in (("add", config.add_alphas), ("reflect", config.reflect_alphas)):
        for a in alphas:
            at = [r for r in qs if r["op"] == op and r["alpha"] == a]
            vec = [r for r in at if r["condition"] == "vector"]
            flipped = [r for r in at if r["condition"] == "flipped"]
            rand = [r for r in at if r["condition"].startswith("random-")]
            k_vec = _swaps(vec)
            entry = {
                "op": op, "alpha": a, "n": len(vec), "swaps": k_vec, "swap_rate": _rate(k_vec, len(vec)),
                "swap_ci95": wilson_interval(k_vec, len(vec)),
                "green_to_red": _rate(_swaps([r for r in vec if r["truth"] == "green"]), sum(r["truth"] == "green" for r in vec)),
                "red_to_green": _rate(_swaps([r for r in vec if r["truth"] == "red"]), sum(r["truth"] == "red" for r in vec)),
                "kept_truth_rate": _rate(sum(r["answer"] == r["truth"] for r in vec), len(vec)),
                "no_colour_rate": _rate(sum(r["answer"] == "other" for r in vec), len(vec)),
                "kl_mean": float(np.mean([r["kl"] for r in vec])) if vec else None,
                "kl_median": float(np.median([r["kl"] for r in vec])) if vec else None,
            }
            if flipped:
                entry["flipped"] = {"n": len(flipped), "swaps": _swaps(flipped), "swap_rate": _rate(_swaps(flipped), len(flipped))}
            if rand:
                per_dir = {}
                for r in rand:
                    per_dir.setdefault(r["condition"], []).append(r)
                rates = [_rate(_swaps(v), len(v)) for v in per_dir.values()]
                k_r = _swaps(rand)
                entry["random"] = {
                    "n": len(rand), "directions": len(per_dir), "swaps": k_r, "swap_rate": _rate(k_r, len(rand)),
                    "per_direction_min": float(min(rates)), "per_direction_max": float(max(rates)),
                    "kl_mean": float(np.mean([r["kl"] for r in rand])),
                    "no_colour_rate": _rate(sum(r["answer"] == "other" for r in rand), len(rand)),
                }
                entry["p_value_vs_random"] = swap_p_value(k_vec, len(vec), k_r, len(rand))
            ctl = [r for r in cs if r["op"] == op and r["alpha"] == a]
            if ctl:
                became = [r for r in ctl if r["answer"] in OPPOSITE and r["baseline_answer"] not in OPPOSITE]
                eligible = [r for r in ctl if r["baseline_answer"] not in OPPOSITE]
                entry["controls"] = {"n": len(ctl), "contaminated": len(became), "contamination_rate": _rate(len(became), len(eligible)),
                                     "kl_mean": float(np.mean([r["kl"] for r in ctl]))}
            out["sweep"].append(entry)
    return out


def _swaps(rows: list[dict]) -> int:
    return sum(r["answer"] == OPPOSITE[r["truth"]] for r in rows)


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None
