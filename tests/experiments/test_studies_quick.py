"""Reduced versions of the four studies on the real default model: the documented findings, in direction and rough size.

Each test runs its own study into its own directory and checks what docs/results.md
says about that study, not only that numbers lie in [0, 1]. The report test renders
the committed full results (docs/results/) and checks the tables in docs/results.md
are exactly what that JSON produces.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from mlx_interp.experiments.cli import quick_configs, run_study

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "docs" / "results"
RESULTS_MD = ROOT / "docs" / "results.md"


def _load(out_dir, stem):
    path = out_dir / f"{stem}.json"
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))
    assert (out_dir / f"{stem}.png").stat().st_size > 10_000
    for key in ("seed", "model_fingerprint", "versions", "datasets", "config"):
        assert key in data
    return data


@pytest.mark.integration
def test_colour_swap_quick(default_lm, tmp_path):
    cfg = quick_configs()["colour-swap"]
    run_study(default_lm, "colour-swap", tmp_path, cfg, progress=False)
    r = _load(tmp_path, "colour_swap")
    assert r["n_questions"] == 12 and r["n_items"] == 6 and r["n_controls"] == 4
    head = next(e for e in r["sweep"] if e["op"] == "add" and e["alpha"] == cfg.headline_alpha)
    rows = [x for x in r["records"] if x["kind"] == "question" and x["condition"] == "vector" and x["op"] == "add" and x["alpha"] == cfg.headline_alpha]
    assert head["all"]["swaps"] == sum(x["answer"] == {"green": "red", "red": "green"}[x["truth"]] for x in rows)
    # the documented finding: at the seed's 1.5 the vector swaps many answers (half on the quick set),
    # random directions with the same accumulated push almost none, item by item
    assert head["all"]["rate"] >= 0.35
    assert r["random"]["directions"] == cfg.n_random and r["random"]["all"]["mean"] <= 0.15
    # (quick run, the whole prompt steered as served: 3 of 6 items up, none down; green->red 5/6, red->green 0/6)
    assert head["vs_random"]["items_up"] >= 3 and head["vs_random"]["items_down"] == 0
    # and it is at the edge of coherence on this model: twice the push names no colour at all
    top = next(e for e in r["sweep"] if e["op"] == "add" and e["alpha"] == max(cfg.add_alphas))
    assert top["no_colour_rate"] >= 0.8 and top["all"]["rate"] <= 0.2
    assert r["flipped"]["all"]["rate"] <= 0.1  # pushing toward the truth never swaps
    # coherence costs grow with alpha; unsteered rows have zero KL to themselves
    add = [e for e in r["sweep"] if e["op"] == "add"]
    assert add[-1]["kl_mean"] > add[0]["kl_mean"] > 0
    assert all(x["kl"] == pytest.approx(0, abs=1e-6) for x in r["records"] if x["condition"] == "baseline")
    # documented: reflect at 1 is gentle (small KL, no more controls touched than by add) and swaps one way, green -> red, not back
    # (quick run: green->red 4/6, red->green 0/6, KL 0.07 against 4.1 for add)
    refl = next(e for e in r["sweep"] if e["op"] == "reflect" and e["alpha"] == 1.0)
    assert refl["kl_mean"] < 0.2 * head["kl_mean"] and refl["controls"]["contaminated"] <= head["controls"]["contaminated"]
    assert refl["green_to_red"] >= refl["red_to_green"] + 0.15 and refl["red_to_green"] <= 0.2
    # the study steers with the coefficient the server derives for the same request
    from mlx_interp.steering.vectors import SteeringVector
    from mlx_interp.gateway.catalog import SHIPPED_VECTORS

    shipped = SteeringVector.load(SHIPPED_VECTORS / "green_red.json")
    assert r["vector"]["per_layer_alpha"][str(cfg.headline_alpha)] == shipped.intervention(cfg.headline_alpha).per_layer_alpha


@pytest.mark.integration
def test_sycophancy_quick(default_lm, tmp_path):
    run_study(default_lm, "sycophancy", tmp_path, quick_configs()["sycophancy"], progress=False)
    r = _load(tmp_path, "sycophancy")
    assert len(r["contrasts"]) == 6 and r["n_items"] == 10
    # documented: SyA vs GA near chance on this model; every contrast that changes the answer's words is separated
    assert r["contrasts"]["SyA vs GA"]["best_auroc"] < 0.9  # the best of 30 layers on 10 items: chance reaches ~0.75
    for name, c in r["contrasts"].items():
        if name != "SyA vs GA":
            assert c["best_accuracy"] >= 0.9, name
    # documented: SyA−neutral and GA−neutral are one direction here (the seed's 7B: 0.61)
    assert r["direction_cosine"]["mid_to_late_mean"] > 0.95


@pytest.mark.integration
def test_confound_quick(default_lm, tmp_path):
    run_study(default_lm, "confound", tmp_path, quick_configs()["confound"], progress=False)
    r = _load(tmp_path, "confound")
    c = r["conditions"]
    assert len(c) == 6
    # documented: perfect on its training contrast, yet flags bare questions, and not the emotional prompts
    assert r["pressure_probe"]["cv_accuracy"] >= 0.9
    assert c["bare_question"]["pressure_probe"]["flagged_rate"] >= 0.7
    assert c["clinical_pressure"]["pressure_probe"]["flagged_rate"] >= 0.7
    assert c["third_party_emotion"]["pressure_probe"]["flagged_rate"] <= 0.3
    assert r["pressure_probe"]["tracks"]["emotion"]["auroc"] < 0.5 < r["pressure_probe"]["tracks"]["pressure"]["auroc"]


@pytest.mark.integration
def test_contamination_quick(default_lm, tmp_path):
    run_study(default_lm, "contamination", tmp_path, quick_configs()["contamination"], progress=False)
    r = _load(tmp_path, "contamination")
    assert len(r["domains"]) == 5
    o = r["overall"]
    # documented: a rubric moves the representation more than padding of its length, a wrong rubric as much as the right one
    assert o["rubric_minus_padding"]["diff"] > 0.003
    assert o["rubric"]["shift"] > o["padding"]["shift"]
    assert abs(o["wrong_rubric"]["shift"] - o["rubric"]["shift"]) < 0.5 * o["rubric_minus_padding"]["diff"] + 0.005


def test_report_tables_in_docs_are_generated_from_the_committed_results():
    from mlx_interp.experiments.report import TABLES

    stems = sorted(p.stem for p in RESULTS_DIR.glob("*.json"))
    assert "colour_swap" in stems and "capability" in stems
    doc = RESULTS_MD.read_text(encoding="utf-8")
    for stem in stems:
        table = TABLES[stem](json.loads((RESULTS_DIR / f"{stem}.json").read_text()))
        assert table in doc, f"docs/results.md does not hold the {stem} table rendered from docs/results/{stem}.json"


def test_committed_colour_and_capability_runs_used_the_served_coefficient(tmp_path):
    """The per-layer coefficient recorded by the committed runs is what the server echoes for {"green_red": 1.5} now."""
    from mlx_interp.gateway import steer_spec
    from mlx_interp.gateway.catalog import SHIPPED_VECTORS, Shelf
    from mlx_interp.gateway.limits import Limits
    from mlx_interp.steering.vectors import VectorLibrary

    shelf = Shelf([VectorLibrary(tmp_path), VectorLibrary(SHIPPED_VECTORS)])
    assert shelf.load_all() == []
    plan = steer_spec.build_plan(steer_spec.parse_body({"green_red": 1.5}, 1, Limits()), 1, shelf, Limits())
    (served,) = plan.applied
    colour = json.loads((RESULTS_DIR / "colour_swap.json").read_text())
    assert colour["vector"]["sha256"] == served["sha256"]
    assert colour["vector"]["per_layer_alpha"]["1.5"] == pytest.approx(served["per_layer_alpha"], abs=1e-6)  # the echo rounds
    capability = json.loads((RESULTS_DIR / "capability.json").read_text())
    (steered,) = capability["steering_applied"]
    assert steered["sha256"] == served["sha256"] and steered["per_layer_alpha"] == served["per_layer_alpha"]


def test_committed_colour_summary_is_recomputed_from_its_records():
    """The committed summary is what summarise() gives on the committed per-answer records."""
    from mlx_interp.experiments.colour_swap import ColourConfig, summarise

    r = json.loads((RESULTS_DIR / "colour_swap.json").read_text())
    cfg = ColourConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in r["config"].items()})
    again = summarise(r["records"], cfg)
    assert json.loads(json.dumps(again)) == {k: r[k] for k in again}
    head = next(e for e in r["sweep"] if e["op"] == "add" and e["alpha"] == cfg.headline_alpha)
    assert head["correct"]["n"] == sum(1 for x in r["records"] if x["condition"] == "vector" and x["op"] == "add"
                                       and x["alpha"] == cfg.headline_alpha and x["kind"] == "question"
                                       and x["baseline_answer"] == x["truth"])
    assert np.isclose(r["random"]["all"]["mean"], np.mean(r["random"]["all"]["per_direction"]))
