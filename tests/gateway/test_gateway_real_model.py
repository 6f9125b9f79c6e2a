"""Behaviour on the real default model (SmolLM2-135M-Instruct) through a real server and the openai client."""

import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from gateway_helpers import ServerProcess, validate

pytestmark = [pytest.mark.integration, pytest.mark.server]

ADMIN = "real-admin-key"
QUESTION = [{"role": "user", "content": "What colour is grass?"}]
TOKENS = 20


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-libraries")
    server = ServerProcess("--model", "default", "--vectors", str(root / "vectors"), "--probes", str(root / "probes"), "--admin-key", ADMIN)
    facts = httpx.get(server.url + "/v1/models").json()["data"][0]
    _upload_random_artifacts(server, facts)
    yield server
    server.stop()


def _upload_random_artifacts(server, facts):
    """A random unit direction (strong enough to derail greedy decoding) and a random probe, via the admin API."""
    from safetensors.numpy import save

    L, D = facts["num_layers"], facts["hidden_size"]
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((L, D)).astype(np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    vector_meta = {
        "format_version": 1, "name": "randdir", "description": "random direction", "model_id": facts["root"],
        "model_fingerprint": facts["fingerprint"], "hidden_size": D, "num_layers": L, "method": "random",
        "recommended_layers": list(range(8, 17)), "layer_norms": [1.0] * L, "default_alpha": 12.0,
        "dataset_hash": None, "created": "2026-01-01T00:00:00+00:00",
    }
    headers = {"Authorization": f"Bearer {ADMIN}"}
    r = httpx.post(server.url + "/v1/steering/vectors", headers=headers, timeout=60, json={
        "name": "randdir", "metadata": vector_meta,
        "safetensors": base64.b64encode(save({"directions": directions})).decode()})
    assert r.status_code == 201, r.text
    layers = np.array([4, 12, 20], np.int32)
    probe_tensors = {
        "layers": layers, "weights": (rng.standard_normal((3, D)) * 0.02).astype(np.float32),
        "bias": np.zeros(3, np.float32), "mean": np.zeros((3, D), np.float32), "scale": np.ones((3, D), np.float32),
    }
    probe_meta = {"format_version": 1, "name": "randprobe", "labels": ["no", "yes"], "method": "logistic", "best_layer": 12,
                  "threshold": 0.5, "aggregation": "mean", "hidden_size": D, "num_layers": L, "model_fingerprint": facts["fingerprint"]}
    r = httpx.post(server.url + "/v1/probes", headers=headers, timeout=60, json={
        "name": "randprobe", "metadata": probe_meta, "safetensors": base64.b64encode(save(probe_tensors)).decode()})
    assert r.status_code == 201, r.text


def _client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=300)


def _greedy(server, **extra):
    resp = _client(server).chat.completions.create(model="default", messages=QUESTION, max_tokens=TOKENS, temperature=0, **extra)
    validate(resp.model_dump(exclude_unset=True), "CreateChatCompletionResponse")
    return resp


def test_real_id_and_default_are_both_served(real):
    ids = [m.id for m in _client(real).models.list().data]
    assert ids[:2] == ["default", "SmolLM2-135M-Instruct"]


def test_steering_by_body_and_header_changes_greedy_output(real):
    plain = _greedy(real)
    assert plain.model_extra["steering"] == {"applied": []}
    body = _greedy(real, extra_body={"steer": {"randdir": 12.0}})
    header = _greedy(real, extra_headers={"X-Steer": "randdir=12"})
    assert body.choices[0].message.content != plain.choices[0].message.content
    assert header.choices[0].message.content == body.choices[0].message.content
    applied = body.model_extra["steering"]["applied"][0]
    assert applied["vector"] == "randdir" and applied["alpha"] == 12.0 and applied["layers"] == list(range(8, 17))


def test_probes_per_layer_and_per_token_non_streamed_and_streamed(real):
    probes = {"randprobe": {"per_token": True}}
    resp = _greedy(real, extra_body={"probes": probes})
    result = resp.choices[0].model_extra["probes"]["randprobe"]
    assert len(result["per_layer"]) == 30 and result["layer"] == 12
    assert [i for i, v in enumerate(result["per_layer"]) if v is not None] == [4, 12, 20]
    assert len(result["per_token"]) == resp.usage.completion_tokens
    assert all(0.0 <= v <= 1.0 for v in result["per_token"])
    chunks = list(_client(real).chat.completions.create(
        model="default", messages=QUESTION, max_tokens=TOKENS, temperature=0, stream=True, extra_body={"probes": probes}))
    for c in chunks:
        validate(c.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == resp.choices[0].message.content
    streamed = [c.choices[0].model_extra["probes"]["randprobe"]["score"] for c in chunks[1:-1]]
    assert streamed == pytest.approx(result["per_token"], abs=1e-5)
    assert chunks[-1].choices[0].model_extra["probes"]["randprobe"]["score"] == pytest.approx(result["score"], abs=1e-5)


def test_a_request_alone_and_next_to_a_steered_one_gives_the_same_tokens(real):
    alone = _greedy(real, logprobs=True)
    with ThreadPoolExecutor(2) as pool:
        together = pool.submit(_greedy, real, logprobs=True)
        steered = pool.submit(_greedy, real, extra_body={"steer": {"randdir": 40.0}})
        together, steered = together.result(), steered.result()
    tokens = lambda r: [t.token for t in r.choices[0].logprobs.content]  # noqa: E731
    assert tokens(together) == tokens(alone)
    assert steered.choices[0].message.content != alone.choices[0].message.content


def test_shipped_vector_and_probe_serve_the_readme_request(real):
    """The request the server prints at start: green_red steering and the sycophancy probe."""
    vectors = {v["name"]: v for v in httpx.get(real.url + "/v1/steering/vectors").json()["data"]}
    probes = {p["name"] for p in httpx.get(real.url + "/v1/probes").json()["data"]}
    assert "green_red" in vectors and not vectors["green_red"]["writable"] and "sycophancy" in probes
    resp = _greedy(real, extra_body={"steer": {"green_red": 1.5}, "probes": ["sycophancy"]})
    assert resp.model_extra["steering"]["applied"][0]["sha256"] == vectors["green_red"]["sha256"]
    result = resp.choices[0].model_extra["probes"]["sycophancy"]
    assert 0.0 <= result["score"] <= 1.0 and isinstance(result["flagged"], bool)
    r = httpx.delete(real.url + "/v1/steering/vectors/green_red", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 409  # shipped: read-only
