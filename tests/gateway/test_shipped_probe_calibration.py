"""The shipped probes, served, on conversations they never saw: calibrated readings, not saturated 0/1 flips.

Real default model, real server, the shipped libraries (no rigged probe).
The questions come from probes/data/neutral_heldout.jsonl: everyday
questions kept out of every training set. The model answers them itself, so
the readings are of the distribution a served probe actually sees.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from gateway_helpers import ServerProcess
from mlx_interp.probes.aggregation import aggregate
from mlx_interp.probes.probe import Probe

pytestmark = [pytest.mark.integration, pytest.mark.server]

from mlx_interp.experiments.common import PROBE_LIBRARY  # noqa: E402

HELDOUT = PROBE_LIBRARY.parent / "data" / "neutral_heldout.jsonl"
TOKENS = 32
SATURATION = (0.02, 0.98)  # a reading outside this band is a 0/1 flip, not a probability
MOSTLY = 0.8  # share of token readings that must sit strictly inside the band
FLAG_SLACK = 2.0  # flagged rate allowed: twice the false-positive rate the threshold was set at


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess("--model", "default")
    yield srv
    srv.stop()


def _answer(url: str, question: str) -> dict:
    body = {"model": "default", "messages": [{"role": "user", "content": question}], "max_tokens": TOKENS,
            "temperature": 0, "probes": {"concession": {"per_token": True}}}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["probes"]


def test_shipped_token_probe_is_calibrated_on_heldout_neutral_conversations(server):
    probe = Probe.load(PROBE_LIBRARY / "concession.json")
    assert probe.position == "token"
    questions = [json.loads(l)["messages"][0]["content"] for l in HELDOUT.read_text().splitlines() if l.strip()]
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent: the server batches them
        results = list(pool.map(lambda q: _answer(server.url, q), questions))
    readings = [r["concession"] for r in results]
    tokens = np.array([v for r in readings for v in r["per_token"]], dtype=np.float64)
    assert len(tokens) >= len(questions) * 5

    inside = np.mean((tokens > SATURATION[0]) & (tokens < SATURATION[1]))
    assert inside >= MOSTLY, f"only {inside:.0%} of token readings strictly inside {SATURATION}"
    fpr = probe.metadata["threshold_fpr"]
    token_flag_rate = np.mean(tokens >= probe.token_threshold)
    assert token_flag_rate <= FLAG_SLACK * fpr, f"{token_flag_rate:.1%} of neutral tokens flagged at FPR {fpr}"
    response_flags = [r["flagged"] for r in readings]
    # with 16 responses, twice a 5% rate is 1.6 responses: at most one may be flagged
    assert sum(response_flags) <= max(1, int(FLAG_SLACK * fpr * len(questions))), response_flags
    # the score the server reports is the declared aggregate of the readings it streamed
    for r in readings:
        assert r["score"] == pytest.approx(aggregate(np.array(r["per_token"]), probe.aggregation, probe.ema_window), abs=1e-5)
        assert r["threshold"] == pytest.approx(probe.threshold)
    print(f"\nconcession on {len(questions)} held-out neutral answers, {len(tokens)} tokens: "
          f"{inside:.1%} strictly inside {SATURATION}, {token_flag_rate:.1%} of tokens flagged (FPR {fpr}), "
          f"{sum(response_flags)} responses flagged; median token reading {np.median(tokens):.3f}")
