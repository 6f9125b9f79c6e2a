"""Reduced versions of the four studies, end to end on the real default model (CI's check of the pipeline)."""

import json

import pytest

from mlx_interp.experiments.cli import quick_configs, run_study

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("studies")


def _load(out_dir, stem):
    path = out_dir / f"{stem}.json"
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))
    assert (out_dir / f"{stem}.png").stat().st_size > 10_000
    for key in ("seed", "model_fingerprint", "versions", "datasets", "config"):
        assert key in data
    return data


def test_colour_swap_quick(default_lm, out_dir):
    cfg = quick_configs()["colour-swap"]
    run_study(default_lm, "colour-swap", out_dir, cfg, progress=False)
    r = _load(out_dir, "colour_swap")
    assert r["n_questions"] == 12 and r["n_controls"] == 4
    add = [e for e in r["sweep"] if e["op"] == "add"]
    assert [e["alpha"] for e in add] == list(cfg.add_alphas)
    for e in add:
        # the summary agrees with the per-answer records it was computed from
        rows = [x for x in r["records"] if x["condition"] == "vector" and x["op"] == "add" and x["alpha"] == e["alpha"] and x["kind"] == "question"]
        assert e["swaps"] == sum(x["answer"] == {"green": "red", "red": "green"}[x["truth"]] for x in rows)
        assert 0 <= e["p_value_vs_random"] <= 1 and e["random"]["directions"] == cfg.n_random
        assert e["kl_mean"] >= 0
    # KL grows with alpha, and unsteered rows have zero KL to themselves
    assert add[-1]["kl_mean"] > add[0]["kl_mean"]
    assert all(x["kl"] == pytest.approx(0, abs=1e-6) for x in r["records"] if x["condition"] == "baseline")


def test_sycophancy_quick(default_lm, out_dir):
    run_study(default_lm, "sycophancy", out_dir, quick_configs()["sycophancy"], progress=False)
    r = _load(out_dir, "sycophancy")
    assert len(r["contrasts"]) == 6 and r["n_items"] == 10
    for c in r["contrasts"].values():
        assert len(c["per_layer"]) == default_lm.num_layers
        assert 0 < c["permutation_p_at_best"] <= 1
    cos = r["direction_cosine"]
    assert len(cos["cosine"]) == default_lm.num_layers and cos["depth"][-1] == 1.0
    assert all(lo <= c + 1e-6 for lo, c in zip(cos["ci_low"], cos["cosine"]))


def test_confound_quick(default_lm, out_dir):
    run_study(default_lm, "confound", out_dir, quick_configs()["confound"], progress=False)
    r = _load(out_dir, "confound")
    assert len(r["conditions"]) == 6
    for c in r["conditions"].values():
        lo, hi = c["pressure_probe"]["flagged_ci"]
        assert lo <= c["pressure_probe"]["flagged_rate"] <= hi
    assert 0 <= r["sycophancy_probe"]["auroc"] <= 1


def test_contamination_quick(default_lm, out_dir):
    run_study(default_lm, "contamination", out_dir, quick_configs()["contamination"], progress=False)
    r = _load(out_dir, "contamination")
    assert len(r["domains"]) == 5
    for d in r["domains"].values():
        for v in ("rubric", "padding", "wrong_rubric"):
            lo, hi = d[v]["ci95"]
            assert lo <= d[v]["shift"] <= hi and d[v]["n"] == 2
            assert 0 <= d[v]["shift"] <= 2


def test_report_renders_every_study(out_dir):
    from mlx_interp.experiments.report import render

    text = render(out_dir)
    for stem in ("colour_swap", "sycophancy", "confound", "contamination"):
        assert f"### {stem}" in text
    assert "0.61" in text and "not reported" in text  # the toolkit's known 7B number, and honesty about the rest
