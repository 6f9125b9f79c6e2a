"""The core benchmark's bookkeeping and the `mlx-interp bench` wiring (no model is run here)."""

import pytest

from mlx_interp.bench import load_bench_core


@pytest.fixture(scope="module")
def core():
    return load_bench_core()


def _results(core, speeds):
    r = core.Results(info={"default": {"model": "m", "mlx": "0", "device": "cpu", "machine": "x", "dtype": "float32", "blas": "b"}},
                     tokens=8, repeats=3, load_before=(1.0, 1.0, 1.0), load_after=(1.0, 1.0, 1.0))
    for case, per_metric in speeds.items():
        for metric, values in per_metric.items():
            r.samples[(case, metric)] = list(values)
            r.cpu_samples[(case, metric)] = [v / 2 for v in values]
    return r


def test_overhead_is_the_median_of_paired_ratios(core):
    metrics = {"prompt": [100, 100, 100], "decode b1": [10, 20, 10], "decode b4": [40, 40, 40]}
    slower = {"prompt": [90, 90, 90], "decode b1": [9.9, 19.8, 5], "decode b4": [36, 36, 36]}
    r = _results(core, {"default": metrics, "add-all": slower})
    assert r.overhead("add-all", "decode b1") == pytest.approx(0.01)  # repeat 3's outlier does not count
    assert r.overhead("add-all", "decode b4") == pytest.approx(0.10)
    report = core.format_report(r)
    assert "| (c) (b) + add on every layer | 90.0 | 9.9 | 36.0 | 0.900 | 0.990 | 0.900 |" in report
    assert "add-all      decode b1:  +1.0% wall" in report
    assert "decode b4: +10.0% wall" in report and "OVER TARGET" in report


def test_cli_validates_arguments(core):
    from mlx_interp.cli import main

    assert main(["bench", "--cases", "default,bogus"]) == 2
    assert main(["bench", "--tokens", "0"]) == 2


def test_every_case_has_a_worker_environment(core):
    assert {c.worker for c in core.CASES} <= set(core.WORKER_ENVS)
    assert core.WORKER_ENVS["native-ref"] == {"MLX_INTERP_BLAS": "reference", "MLX_INTERP_DTYPE": "native"}
    assert set(core.OVERHEAD_TARGETS) <= set(core.CASES_BY_NAME)
