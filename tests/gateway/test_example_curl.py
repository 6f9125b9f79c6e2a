"""The curl line `serve` prints: the shipped example's vector and probe even when a user's files sort first."""

import json
from types import SimpleNamespace

from mlx_interp.gateway.cli import example_curl


class _Shelf:
    def __init__(self, names, alpha=1.25):
        self._names, self._alpha = names, alpha

    def names(self):
        return list(self._names)

    def get(self, name):
        return SimpleNamespace(default_alpha=self._alpha)


def _body(vectors, probes, api_key=None):
    gw = SimpleNamespace(vectors=_Shelf(vectors), probes=_Shelf(probes), keys=SimpleNamespace(api_key=api_key))
    line = example_curl("http://127.0.0.1:8000", gw)
    return json.loads(line.split(" -d '", 1)[1].rstrip("'")), line


def test_prefers_the_shipped_example_names():
    body, _ = _body(["aaa_mine", "green_red"], ["bench_probe_0", "concession", "sycophancy"])
    assert body["steer"] == [{"vector": "green_red", "alpha": [0, 1.25]}]
    assert body["probes"] == ["concession"] and body["n"] == 2


def test_falls_back_to_what_is_served():
    body, line = _body(["mine"], [], api_key="k")
    assert body["steer"][0]["vector"] == "mine" and "probes" not in body
    assert "Authorization: Bearer $MLX_INTERP_API_KEY" in line
    body, _ = _body([], [])
    assert "steer" not in body and "n" not in body
