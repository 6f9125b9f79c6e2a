"""The OpenAI protocol and the extension fields, against a real server on the tiny llama model."""

import base64
import json

import httpx
import openai
import pytest

from conftest import ADMIN_KEY, API_KEY
from gateway_helpers import ServerProcess, make_probe, make_vector, sse_events, validate

pytestmark = pytest.mark.server

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12, "temperature": 0}


def chat(client, **fields):
    body = {**CHAT, **fields}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    validate(data, "CreateChatCompletionResponse")
    return data


def stream(client, path, body, headers=None):
    r = client.post(path, json={**body, "stream": True}, headers=headers or {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    return events[:-1]


def test_health_needs_no_key_and_everything_else_does(tiny_server):
    assert httpx.get(tiny_server.url + "/health").json()["status"] == "ok"
    for path in ("/v1/models", "/metrics", "/v1/probes", "/v1/steering/vectors"):
        r = httpx.get(tiny_server.url + path)
        assert r.status_code == 401, path
        validate(r.json(), "ErrorResponse")
    r = httpx.get(tiny_server.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_start_reports_refused_artifacts_and_a_working_curl_line(tiny_server, client):
    log = tiny_server.log()
    refused = [line for line in log.splitlines() if line.startswith("refused ")]
    # the package's shipped artifacts are built for the real model: refused for the tiny one, one line each
    ours = [line for line in refused if "gateway-artifacts" in line]
    assert len(ours) == 1 and "broken.json" in ours[0] and "invalid JSON" in ours[0]
    assert all(line.count("\n") == 0 and ": " in line for line in refused)
    curl = next(line for line in log.splitlines() if line.startswith("try: curl "))
    assert '"steer": [{"vector": "pull", "alpha": [0, -6.0]}]' in curl and '"probes": ["alpha_probe"]' in curl
    # the body it prints works: unsteered and steered side by side
    body = json.loads(curl.split(" -d '", 1)[1].rstrip("'"))
    data = client.post("/v1/chat/completions", json=body).json()
    assert body["n"] == 2 and body["temperature"] == 0 and len(data["choices"]) == 2
    assert data["steering"]["applied"][0]["alpha"] == [0, -6.0]
    listed = client.get("/v1/steering/vectors").json()["data"]
    assert [v["name"] for v in listed] == ["pull", "push"]
    # uncalibrated vectors are served and say so; random test directions keep the per-layer unit
    assert all(v["calibrated"] is False and v["alpha_unit"] == "per_layer" for v in listed)


def test_models_list_has_default_real_id_and_presets(client):
    data = client.get("/v1/models").json()
    validate(data, "ListModelsResponse")
    ids = [m["id"] for m in data["data"]]
    assert ids[0] == "default" and "pushed" in ids and len(ids) == 3
    one = client.get("/v1/models/pushed").json()
    validate(one, "Model")
    assert one["preset"]["steer"] == {"push": 8.0}
    assert client.get("/v1/models/nope").status_code == 404


def test_chat_greedy_is_deterministic_and_counts_usage(client):
    a, b = chat(client), chat(client)
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]
    usage = a["usage"]
    assert usage["completion_tokens"] <= 12 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert a["steering"] == {"applied": []}
    assert "probes" not in a["choices"][0]


def test_stream_matches_non_stream_and_reports_usage(client):
    whole = chat(client)
    events = stream(client, "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}})
    for ev in events:
        validate(ev, "CreateChatCompletionStreamResponse")
    text = "".join(ev["choices"][0]["delta"].get("content", "") for ev in events if ev["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]


def test_logprobs_non_streamed_and_streamed(client):
    data = chat(client, logprobs=True, top_logprobs=3)
    content = data["choices"][0]["logprobs"]["content"]
    assert len(content) == data["usage"]["completion_tokens"]
    for entry in content:
        assert entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 3
        # greedy: the chosen token is the most likely one
        assert entry["logprob"] == pytest.approx(entry["top_logprobs"][0]["logprob"], abs=1e-5)
    events = stream(client, "/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 2})
    streamed = [e["choices"][0]["logprobs"]["content"][0] for e in events if e["choices"] and e["choices"][0].get("logprobs")]
    assert [e["logprob"] for e in streamed] == pytest.approx([e["logprob"] for e in content], abs=1e-5)


def test_n_choices_sampled_with_seed_are_reproducible(client):
    body = {"n": 3, "temperature": 1.0, "seed": 7, "max_tokens": 8}
    a, b = chat(client, **body), chat(client, **body)
    texts = [c["message"]["content"] for c in a["choices"]]
    assert texts == [c["message"]["content"] for c in b["choices"]]
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    assert len(set(texts)) > 1  # choices differ from one another


def test_stop_string_cuts_output_and_never_streams_it(client):
    full = chat(client, max_tokens=20)["choices"][0]["message"]["content"]
    assert len(full) >= 4
    stop = full[2:4]
    cut = chat(client, max_tokens=20, stop=[stop])["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["message"]["content"] == full[: full.index(stop)]
    events = stream(client, "/v1/chat/completions", {**CHAT, "max_tokens": 20, "stop": stop})
    text = "".join(ev["choices"][0]["delta"].get("content", "") for ev in events if ev["choices"])
    assert text == cut["message"]["content"]


def test_text_completion_echo_and_scoring_only(client):
    r = client.post("/v1/completions", json={"model": "default", "prompt": "abc", "max_tokens": 4, "temperature": 0, "echo": True})
    data = r.json()
    validate(data, "CreateCompletionResponse")
    assert data["choices"][0]["text"].startswith("abc")
    body = {"model": "default", "prompt": "score me", "max_tokens": 0, "echo": True,
            "probes": {"alpha_probe": {"per_token": True}}}
    data = client.post("/v1/completions", json=body).json()
    validate(data, "CreateCompletionResponse")
    choice = data["choices"][0]
    assert choice["text"] == "score me" and data["usage"]["completion_tokens"] == 0
    result = choice["probes"]["alpha_probe"]
    assert len(result["per_token"]) == data["usage"]["prompt_tokens"]
    assert result["per_token"][-1] == pytest.approx(result["prompt_score"], abs=1e-5)


def test_text_completion_stream_and_logprobs(client):
    body = {"model": "default", "prompt": "abc", "max_tokens": 5, "temperature": 0, "logprobs": 2}
    whole = client.post("/v1/completions", json=body).json()
    validate(whole, "CreateCompletionResponse")
    lp = whole["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == whole["usage"]["completion_tokens"]
    events = stream(client, "/v1/completions", body)
    for ev in events:
        validate(ev, "CreateCompletionResponse", streamed_completion=True)
    assert "".join(e["choices"][0]["text"] for e in events) == whole["choices"][0]["text"]


def test_steering_by_body_and_header_changes_output_and_is_echoed(client, tiny_server):
    plain = chat(client)["choices"][0]["message"]["content"]
    steered = chat(client, steer={"push": 40.0})
    assert steered["choices"][0]["message"]["content"] != plain
    (applied,) = steered["steering"]["applied"]
    assert applied["vector"] == "push" and applied["alpha"] == 40.0 and applied["op"] == "add"
    assert applied["layers"] == [1, 2] and applied["scope"] == "all" and len(applied["sha256"]) == 64
    r = client.post("/v1/chat/completions", json=CHAT, headers={"X-Steer": "push=40"})
    assert r.json()["choices"][0]["message"]["content"] == steered["choices"][0]["message"]["content"]
    full = chat(client, steer=[{"vector": "push", "alpha": 40.0, "layers": "1-2"}])
    assert full["choices"][0]["message"]["content"] == steered["choices"][0]["message"]["content"]
    ablated = chat(client, steer=[{"vector": "pull", "op": "clamp", "value": 3.0, "layers": "all", "scope": "generation"}])
    assert ablated["steering"]["applied"][0]["layers"] == [0, 1, 2, 3]


def test_alpha_list_sweeps_choices(client):
    data = chat(client, n=3, steer=[{"vector": "push", "alpha": [0.0, 40.0, -40.0]}])
    texts = [c["message"]["content"] for c in data["choices"]]
    assert texts[0] == chat(client)["choices"][0]["message"]["content"]  # alpha 0 = unsteered
    assert len(set(texts)) == 3
    assert data["steering"]["applied"][0]["alpha"] == [0.0, 40.0, -40.0]


def test_preset_applies_its_steering_and_probes(client):
    by_preset = chat(client, model="pushed")
    by_body = chat(client, steer={"push": 8.0}, probes=["alpha_probe"])
    assert by_preset["model"] == "pushed"
    assert by_preset["choices"][0]["message"]["content"] == by_body["choices"][0]["message"]["content"]
    assert by_preset["steering"]["applied"][0]["vector"] == "push"
    assert "alpha_probe" in by_preset["choices"][0]["probes"]


def test_probes_per_layer_and_per_token(client):
    data = chat(client, probes={"alpha_probe": {"per_token": True, "threshold": 0.3}, "beta_probe": {}})
    probes = data["choices"][0]["probes"]
    a, b = probes["alpha_probe"], probes["beta_probe"]
    assert a["layer"] == 2 and a["aggregate"] == "mean" and a["threshold"] == 0.3
    assert len(a["per_layer"]) == 4 and a["per_layer"][0] is None and all(0 <= x <= 1 for x in a["per_layer"][1:])
    assert b["per_layer"][1] is None and b["per_layer"][2] is None and b["threshold"] == 0.9
    assert len(a["per_token"]) == data["usage"]["completion_tokens"]
    assert "per_token" not in b
    assert a["score"] == pytest.approx(sum(a["per_token"]) / len(a["per_token"]), abs=1e-4)
    assert a["score"] == pytest.approx(a["per_layer"][2], abs=1e-5)
    assert a["flagged"] == (a["score"] >= 0.3)
    assert 0 <= a["prompt_score"] <= 1
    # probing never changes what is generated
    assert data["choices"][0]["message"]["content"] == chat(client)["choices"][0]["message"]["content"]


def test_probes_streamed_per_token_then_aggregates(client):
    body = {**CHAT, "probes": {"alpha_probe": {"per_token": True}}}
    whole = chat(client, **body)["choices"][0]["probes"]["alpha_probe"]
    events = stream(client, "/v1/chat/completions", body, headers={"X-Probes": "beta_probe"})
    per_token = [e["choices"][0]["probes"]["alpha_probe"]["score"] for e in events[1:-1]]
    assert all(set(e["choices"][0]["probes"]) == {"alpha_probe", "beta_probe"} for e in events[1:-1])
    assert per_token == pytest.approx(whole["per_token"], abs=1e-5)
    final = events[-1]["choices"][0]["probes"]["alpha_probe"]
    assert final["score"] == pytest.approx(whole["score"], abs=1e-5)


def test_openai_client_reads_extension_fields(tiny_server):
    oa = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key=API_KEY)
    resp = oa.chat.completions.create(
        model="default", messages=CHAT["messages"], max_tokens=6, temperature=0,
        extra_body={"steer": {"push": 10.0}, "probes": ["alpha_probe"]},
    )
    assert resp.model_extra["steering"]["applied"][0]["vector"] == "push"
    assert 0 <= resp.choices[0].model_extra["probes"]["alpha_probe"]["score"] <= 1
    chunks = list(oa.chat.completions.create(
        model="default", messages=CHAT["messages"], max_tokens=6, temperature=0, stream=True,
        extra_body={"probes": ["alpha_probe"]},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    plain = oa.chat.completions.create(model="default", messages=CHAT["messages"], max_tokens=6, temperature=0)
    assert text == plain.choices[0].message.content
    assert "probes" in chunks[-1].choices[0].model_extra
    completion = oa.completions.create(model="default", prompt="abc", max_tokens=3, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError) as err:
        oa.chat.completions.create(model="default", messages=CHAT["messages"], extra_body={"steer": {"nope": 1}})
    assert err.value.body["param"] == "steer"
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="gpt-nothing", messages=CHAT["messages"])


def _upload_body(vector_or_probe, kind):
    from safetensors.numpy import save

    if kind == "vector":
        tensors = {"directions": vector_or_probe.directions}
    else:
        tensors = vector_or_probe.tensors()
    return {"name": vector_or_probe.name, "metadata": vector_or_probe.metadata,
            "safetensors": base64.b64encode(save(tensors)).decode()}


@pytest.fixture()
def upload_server(tiny_model_dirs, tmp_path):
    """A server of its own with empty writable libraries: uploads and deletions never touch the
    session server that the other tests list and use."""
    server = ServerProcess(
        "--model", str(tiny_model_dirs["llama"]),
        "--vectors", str(tmp_path / "writable-vectors"),
        "--probes", str(tmp_path / "writable-probes"),
        "--api-key", API_KEY, "--admin-key", ADMIN_KEY,
        env={"MLX_INTERP_HOME": str(tmp_path / "home")},
    )
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as client, \
                httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as admin:
            yield client, admin
    finally:
        server.stop()


def test_hot_upload_of_good_and_bad_vectors_and_probes(upload_server, tiny_llama, tmp_path):
    client, admin = upload_server
    good = make_vector(tiny_llama, "uploaded", tmp_path / "v", seed=9)
    body = _upload_body(good, "vector")
    assert client.post("/v1/steering/vectors", json=body).status_code == 403  # API key is not the admin key
    r = admin.post("/v1/steering/vectors", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == good.sha256
    assert "uploaded" in [v["name"] for v in client.get("/v1/steering/vectors").json()["data"]]
    steered = chat(client, steer={"uploaded": 40.0})
    assert steered["steering"]["applied"][0]["sha256"] == good.sha256

    bad = dict(body, name="broken")
    bad["metadata"] = {**good.metadata, "name": "broken", "hidden_size": 7}
    r = admin.post("/v1/steering/vectors", json=bad)
    assert r.status_code == 422 and "hidden" in r.json()["error"]["message"]
    r = admin.post("/v1/steering/vectors", json=dict(body, safetensors=base64.b64encode(b"not a tensor file").decode()))
    assert r.status_code == 422
    r = admin.post("/v1/steering/vectors", json=dict(body, name="../escape"))
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"

    probe = make_probe(tiny_llama, "uploaded_probe", None, seed=11)
    r = admin.post("/v1/probes", json=_upload_body(probe, "probe"))
    assert r.status_code == 201, r.text
    assert "uploaded_probe" in chat(client, probes=["uploaded_probe"])["choices"][0]["probes"]

    assert admin.delete("/v1/steering/vectors/uploaded").status_code == 200
    assert admin.delete("/v1/probes/uploaded_probe").status_code == 200
    r = client.post("/v1/chat/completions", json={**CHAT, "steer": {"uploaded": 1.0}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "steer"
    assert admin.delete("/v1/steering/vectors/uploaded").status_code == 404
    assert client.get("/health").status_code == 200


def test_metrics_count_requests_tokens_and_use(client):
    chat(client, steer={"push": 1.0}, probes=["alpha_probe"])
    text = client.get("/metrics").text
    assert 'mlx_interp_requests_total{route="/v1/chat/completions",method="POST",status="200"}' in text
    assert 'mlx_interp_steering_requests_total{vector="push"}' in text
    assert 'mlx_interp_probe_requests_total{probe="alpha_probe"}' in text
    tokens = [l for l in text.splitlines() if l.startswith("mlx_interp_completion_tokens_total ")]
    assert int(tokens[0].split()[1]) > 0


def test_cors_only_for_listed_origins(client):
    pre = {"Access-Control-Request-Method": "POST"}
    ok = client.options("/v1/chat/completions", headers={**pre, "Origin": "https://allowed.example"})
    assert ok.headers.get("access-control-allow-origin") == "https://allowed.example"
    bad = client.options("/v1/chat/completions", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


def test_streamed_choices_each_finish_and_echo_streams_the_prompt(client):
    body = {**CHAT, "n": 2, "temperature": 1.0, "seed": 3, "max_tokens": 6, "probes": ["alpha_probe"]}
    whole = chat(client, **{k: v for k, v in body.items() if k != "stream"})
    events = stream(client, "/v1/chat/completions", body)
    finals = {}
    texts = {0: "", 1: ""}
    for ev in events:
        validate(ev, "CreateChatCompletionStreamResponse")
        for c in ev["choices"]:
            texts[c["index"]] += c["delta"].get("content", "")
            if c["finish_reason"]:
                finals[c["index"]] = c["probes"]["alpha_probe"]["score"]
    assert texts == {c["index"]: c["message"]["content"] for c in whole["choices"]}
    assert finals == pytest.approx({c["index"]: c["probes"]["alpha_probe"]["score"] for c in whole["choices"]}, abs=1e-5)
    events = stream(client, "/v1/completions", {"model": "default", "prompt": "echo this", "max_tokens": 3, "echo": True, "temperature": 0})
    text = "".join(e["choices"][0]["text"] for e in events)
    whole = client.post("/v1/completions", json={"model": "default", "prompt": "echo this", "max_tokens": 3, "echo": True, "temperature": 0}).json()
    assert text == whole["choices"][0]["text"] and text.startswith("echo this")
