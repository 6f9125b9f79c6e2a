import json

import httpx
import pytest

from gateway_helpers import ADMIN_KEY, API_KEY, ServerProcess, make_probe, make_vector



@pytest.fixture(scope="session")
def tiny_artifacts(tiny_llama, tmp_path_factory):
    """Vector and probe libraries (and a preset file) made for the tiny llama model."""
    root = tmp_path_factory.mktemp("gateway-artifacts")
    vectors, probes = root / "vectors", root / "probes"
    make_vector(tiny_llama, "push", vectors, seed=1)
    make_vector(tiny_llama, "pull", vectors, seed=2, layers=(0, 1, 2, 3), alpha=-6.0)
    make_probe(tiny_llama, "alpha_probe", probes, seed=3, layers=(1, 2, 3), best=2)
    make_probe(tiny_llama, "beta_probe", probes, seed=4, layers=(0, 3), best=3, threshold=0.9)
    (vectors / "broken.json").write_text("{not json")  # refused at start, one line; the server keeps going
    presets = root / "presets.json"
    presets.write_text(json.dumps({"pushed": {"model": "default", "steer": {"push": 8.0}, "probes": ["alpha_probe"]}}))
    return {"vectors": vectors, "probes": probes, "presets": presets, "root": root}


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dirs, tiny_artifacts):
    server = ServerProcess(
        "--model", str(tiny_model_dirs["llama"]),
        "--vectors", str(tiny_artifacts["vectors"]),
        "--probes", str(tiny_artifacts["probes"]),
        "--presets", str(tiny_artifacts["presets"]),
        "--api-key", API_KEY,
        "--admin-key", ADMIN_KEY,
        "--max-body-bytes", "65536",
        "--max-tokens", "2048",
        "--cors-origin", "https://allowed.example",
    )
    yield server
    server.stop()


@pytest.fixture()
def client(tiny_server):
    with httpx.Client(base_url=tiny_server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


@pytest.fixture()
def admin(tiny_server):
    with httpx.Client(base_url=tiny_server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as c:
        yield c
