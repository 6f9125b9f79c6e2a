"""Study 4: does telling the model it is being graded move its representation more than noise does?

For every prompt, the last-token residual state of the clean prompt is compared
with the same prompt followed by (a) its domain's grading rubric, (b) random
words of the rubric's length in characters, (c) another domain's rubric. The
shift is 1 − cosine(clean, variant), averaged over a band of middle-to-late
layers; per domain, bootstrap 95% CIs over prompts (1000 resamples), and the
paired rubric − padding difference with its own CI.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlx_interp.steering.analysis import bootstrap_ci, paired_bootstrap_ci

from .common import CONTAMINATION, read_jsonl, run_record

VARIANTS = ("rubric", "padding", "wrong_rubric")
BAND = (0.25, 0.9)  # layers summarised: from a quarter of the depth to 90%


@dataclass
class ContaminationConfig:
    max_prompts_per_domain: int | None = None
    n_bootstrap: int = 1000
    seed: int = 0
    chat: bool = True


def cosine_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − cos(a[..., l, :], b[..., l, :]) over the last axis."""
    num = np.einsum("...d,...d->...", a, b)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return 1.0 - num / np.maximum(den, 1e-12)


def summary_layers(num_layers: int) -> list[int]:
    lo = int(np.floor(BAND[0] * num_layers))
    hi = max(lo + 1, int(np.ceil(BAND[1] * num_layers)))
    return list(range(lo, min(hi, num_layers)))


def summarise(shifts: dict, n_bootstrap: int, seed: int) -> dict:
    """shifts[domain][variant] = (n_prompts,) values -> estimates with CIs; checked on constructed inputs in tests."""
    out = {}
    for d, by_variant in shifts.items():
        out[d] = {}
        for v, vals in by_variant.items():
            est, lo, hi = bootstrap_ci(vals, n_resamples=n_bootstrap, seed=seed)
            out[d][v] = {"shift": est, "ci95": [lo, hi], "n": len(vals)}
        for other in ("padding", "wrong_rubric"):
            if "rubric" in by_variant and other in by_variant:
                est, lo, hi = paired_bootstrap_ci(by_variant["rubric"], by_variant[other], n_resamples=n_bootstrap, seed=seed)
                out[d][f"rubric_minus_{other}"] = {"diff": est, "ci95": [lo, hi]}
    return out


def run(lm, out_dir: Path | None = None, config: ContaminationConfig = ContaminationConfig(), progress: bool = True) -> dict:
    from mlx_interp.steering.capture import capture_hidden_states

    rows = read_jsonl(CONTAMINATION)
    if config.max_prompts_per_domain is not None:
        per_domain: dict = {}
        for r in rows:
            per_domain.setdefault(r["domain"], [])
            if r["group"] not in per_domain[r["domain"]]:
                per_domain[r["domain"]].append(r["group"])
        keep = {g for gs in per_domain.values() for g in gs[: config.max_prompts_per_domain]}
        rows = [r for r in rows if r["group"] in keep]
    X = capture_hidden_states(lm, [r["prompt"] for r in rows], position="last", chat=config.chat, progress=progress)
    index = {(r["group"], r["variant"]): i for i, r in enumerate(rows)}
    layers = summary_layers(lm.num_layers)
    shifts: dict = {}
    per_layer: dict = {}
    for r in rows:
        if r["variant"] == "clean":
            continue
        clean = X[index[(r["group"], "clean")]]
        s = cosine_shift(clean, X[index[(r["group"], r["variant"])]])  # (L,)
        shifts.setdefault(r["domain"], {}).setdefault(r["variant"], []).append(float(s[layers].mean()))
        per_layer.setdefault(r["variant"], []).append(s)
    domains = summarise({d: {v: np.array(vals) for v, vals in by.items()} for d, by in shifts.items()}, config.n_bootstrap, config.seed)
    result = {
        **run_record(lm, "contamination", config.seed, [CONTAMINATION], asdict(config)),
        "summary_layers": layers,
        "padding_length": "same number of characters as the rubric",
        "domains": domains,
        "per_layer_mean": {v: np.mean(s, axis=0) for v, s in per_layer.items()},
        "overall": summarise({"all": {v: np.concatenate([np.array(shifts[d][v]) for d in shifts]) for v in VARIANTS}},
                             config.n_bootstrap, config.seed)["all"],
    }
    if out_dir is not None:
        from .common import write_results
        from .plotting import plot_contamination

        write_results(out_dir, "contamination", result)
        plot_contamination(result, Path(out_dir) / "contamination.png")
    return result
