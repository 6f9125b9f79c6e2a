"""The playground's files over HTTP (public, same-origin, no network) and the stream data it draws."""

import json
import re

import httpx
import pytest

from gateway_helpers import ROOT, sse_events

from mlx_interp.gateway import playground

pytestmark = pytest.mark.server

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5, "temperature": 0}


def test_page_and_assets_are_public_while_the_api_keeps_its_key(tiny_server):
    page = httpx.get(tiny_server.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    for name, media in playground.ASSET_TYPES.items():
        r = httpx.get(tiny_server.url + playground.ASSET_PREFIX + name)
        assert r.status_code == 200, name
        assert r.headers["content-type"] == media
        assert r.headers["x-content-type-options"] == "nosniff"
    # the key still guards the API, and anything under /playground/ that is not a shipped file
    assert httpx.get(tiny_server.url + "/v1/models").status_code == 401
    assert httpx.get(tiny_server.url + "/playground/../v1/models").status_code == 401
    assert httpx.get(tiny_server.url + "/playground/secret.txt").status_code == 401


def test_every_file_the_page_loads_is_shipped_and_nothing_comes_from_elsewhere():
    folder = ROOT / "gateway" / "playground"
    on_disk = {p.name for p in folder.iterdir() if p.is_file()}
    assert on_disk == set(playground.ASSET_TYPES), "ASSET_TYPES must list exactly the files in gateway/playground"
    referenced = set()
    for name in on_disk:
        text = (folder / name).read_text()
        assert not re.search(r"https?://(?!127\.0\.0\.1|localhost|www\.w3\.org/2000/svg)", text), f"{name} reaches outside the server"
        referenced |= set(re.findall(r'(?:src|href)="/playground/([^"]+)"', text))
        referenced |= set(re.findall(r'from "\./([^"]+)"', text))
    assert referenced and referenced <= set(playground.ASSET_TYPES)


def test_streamed_per_token_readings_carry_every_layer(client, tiny_llama):
    body = {**CHAT, "stream": True, "probes": {"alpha_probe": {"per_token": True}, "beta_probe": {}}}
    r = client.post("/v1/chat/completions", json=body)
    events = [e for e in sse_events(r.text) if e != "[DONE]"]
    tokens = [e["choices"][0] for e in events[1:] if e["choices"] and e["choices"][0]["finish_reason"] is None]
    assert tokens
    whole = client.post("/v1/chat/completions", json={**body, "stream": False}).json()["choices"][0]["probes"]
    for i, c in enumerate(tokens):
        alpha = c["probes"]["alpha_probe"]
        assert len(alpha["per_layer"]) == tiny_llama.num_layers
        assert alpha["per_layer"][2] == alpha["score"]  # alpha_probe's best layer
        assert alpha["per_layer"][0] is None  # no weights at layer 0
        assert alpha["score"] == pytest.approx(whole["alpha_probe"]["per_token"][i], abs=1e-6)
        assert set(c["probes"]["beta_probe"]) == {"score"}  # not asked per token: the score alone
    json.dumps(events, allow_nan=False)
