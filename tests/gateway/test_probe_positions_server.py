"""The server reads each probe where it was trained (api.md section 4), through a real server on the tiny llama.

Four probes share one set of weights and differ only in their declared
position (and one in its aggregate), so their readings must be the same
numbers taken at different places.
"""

import httpx
import numpy as np
import pytest

from gateway_helpers import ServerProcess, make_probe, sse_events
from mlx_interp.probes.aggregation import aggregate

pytestmark = pytest.mark.server

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 10,
        "temperature": 0, "ignore_eos": True}
EMA_WINDOW = 3


@pytest.fixture(scope="module")
def server(tiny_llama, tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("positions")
    for name, extra in (
        ("at_token", {"position": "token"}),
        ("at_token_ema", {"position": "token", "aggregation": "ema", "ema_window": EMA_WINDOW}),
        ("at_prompt", {"position": "prompt_last"}),
        ("at_end", {"position": "answer_end"}),
    ):
        probe = make_probe(tiny_llama, name, None, seed=7, layers=(1, 2, 3), best=2)
        probe.metadata.update(extra)
        probe.save(root)
    srv = ServerProcess("--model", str(tiny_model_dirs["llama"]), "--probes", str(root))
    yield srv
    srv.stop()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


ALL = {"at_token": {"per_token": True}, "at_token_ema": {"per_token": True}, "at_prompt": {}, "at_end": {}}


def test_each_probe_is_read_at_its_own_position(client):
    r = client.post("/v1/chat/completions", json={**CHAT, "probes": ALL})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "length"
    p = choice["probes"]
    tok, ema, prompt, end = p["at_token"], p["at_token_ema"], p["at_prompt"], p["at_end"]
    assert [x["position"] for x in (tok, prompt, end)] == ["token", "prompt_last", "answer_end"]
    assert len(tok["per_token"]) == 10 and tok["per_token"] == ema["per_token"]  # same weights, same readings
    assert tok["score"] == pytest.approx(np.mean(tok["per_token"]), abs=1e-5)
    assert ema["score"] == pytest.approx(aggregate(np.array(ema["per_token"]), "ema", EMA_WINDOW), abs=1e-5)
    assert ema["aggregate"] == "ema" and prompt["aggregate"] is None
    # prompt_last: the reading before anything was generated; answer_end: the last answer token's reading
    assert prompt["score"] == pytest.approx(tok["prompt_score"], abs=1e-6)
    assert end["score"] == pytest.approx(tok["per_token"][-1], abs=1e-5)
    assert end["score"] != pytest.approx(prompt["score"], abs=1e-4)
    assert "per_token" not in prompt and "per_token" not in end


def test_stream_carries_live_scores_of_token_probes_only(client):
    r = client.post("/v1/chat/completions", json={**CHAT, "probes": ALL, "stream": True})
    assert r.status_code == 200, r.text
    events = sse_events(r.text)[:-1]
    live = [e["choices"][0]["probes"] for e in events if e.get("choices") and e["choices"][0].get("probes")
            and e["choices"][0]["finish_reason"] is None]
    assert len(live) == 10 and all(set(x) == {"at_token", "at_token_ema"} for x in live)
    final = [e for e in events if e.get("choices") and e["choices"][0]["finish_reason"]][0]["choices"][0]["probes"]
    assert set(final) == set(ALL) and final["at_end"]["score"] == pytest.approx(live[-1]["at_token"]["score"], abs=1e-5)


def test_answer_end_with_nothing_generated_reads_the_end_of_the_text(client):
    r = client.post("/v1/completions", json={"model": "default", "prompt": "a whole answer to score", "max_tokens": 0,
                                             "probes": ["at_end", "at_prompt"]})
    assert r.status_code == 200, r.text
    p = r.json()["choices"][0]["probes"]
    assert p["at_end"]["score"] == pytest.approx(p["at_prompt"]["score"], abs=1e-6)


@pytest.mark.parametrize("probes, says", [
    ({"at_end": {"per_token": True}}, "'answer_end'"),
    ({"at_prompt": {"per_token": True}}, "'prompt_last'"),
    ({"at_token": {"position": "answer_end"}}, "'token'"),
    ({"at_end": {"position": "token"}}, "'answer_end'"),
])
def test_a_reading_the_probe_was_not_trained_for_is_refused(client, probes, says):
    r = client.post("/v1/chat/completions", json={**CHAT, "probes": probes})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "probes" and err["code"] == "unsupported_probe_position"
    assert says in err["message"] and "supports" in err["message"]


def test_probe_listing_shows_positions(client):
    listed = {p["name"]: p for p in client.get("/v1/probes").json()["data"]}
    assert listed["at_token"]["position"] == "token" and listed["at_end"]["position"] == "answer_end"
