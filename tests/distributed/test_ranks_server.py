"""`serve --ranks 2` on loopback (ring backend) against one-process serving: same tokens, logprobs, probe scores.

Real servers (uvicorn) and the openai client. The default model has 9 heads, so two ranks split
it by layers (pipeline: rank 1 runs layers 0-14, rank 0 layers 15-29); the tiny llama (4 heads)
also splits by heads (tensor). Slow on a busy 2-core machine: few requests, few tokens.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))

from gateway_helpers import ServerProcess, make_probe, make_vector  # noqa: E402
from test_gateway_real_model import ADMIN, _upload_random_artifacts  # noqa: E402  (a random vector over layers 8-16, a random probe on 4, 12, 20)

pytestmark = [pytest.mark.integration, pytest.mark.server]

QUESTION = [{"role": "user", "content": "What colour is grass?"}]
TOKENS = 6
TOL = 2e-3

# plain; add over the vector's layers 8-16 (both ranks); reflect over 10-20 (both ranks); a probe on layers 4, 12, 20
REQUESTS = {
    "plain": {},
    "add": {"steer": [{"vector": "randdir", "alpha": 40.0}]},
    "reflect": {"steer": [{"vector": "randdir", "op": "reflect", "alpha": 2.0, "layers": "10-20"}]},
}


def _serve(root: Path, *extra: str, env: dict | None = None) -> ServerProcess:
    return ServerProcess("--model", "default", "--vectors", str(root / "vectors"), "--probes", str(root / "probes"),
                         "--admin-key", ADMIN, *extra, env=env)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    one = _serve(tmp_path_factory.mktemp("one"))
    two = _serve(tmp_path_factory.mktemp("two"), "--ranks", "2", "--rank-timeout", "30")
    try:
        for s in (one, two):
            facts = httpx.get(s.url + "/v1/models").json()["data"][0]
            _upload_random_artifacts(s, facts)  # the upload must reach both ranks for the steered requests to match
        yield one, two
    finally:
        two.stop()
        one.stop()


def _ask(server, extra: dict, **kw):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=600, max_retries=0)
    body = {"probes": ["randprobe"], **extra}
    return client.chat.completions.create(model="default", messages=QUESTION, max_tokens=TOKENS, temperature=0,
                                          logprobs=True, top_logprobs=2, extra_body=body, **kw)


def _together(server, requests: dict) -> dict:
    """Send every request at once (they share decode steps), wait for all."""
    out, threads = {}, []
    for name, extra in requests.items():
        t = threading.Thread(target=lambda n=name, e=extra: out.__setitem__(n, _ask(server, e)))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return out


def _assert_same(a, b, what: str) -> None:
    ca, cb = a.choices[0], b.choices[0]
    assert ca.message.content == cb.message.content, what
    la = [t.logprob for t in ca.logprobs.content]
    lb = [t.logprob for t in cb.logprobs.content]
    assert np.allclose(la, lb, atol=TOL), (what, la, lb)
    pa, pb = ca.model_extra["probes"], cb.model_extra["probes"]
    for name in pa:
        x = np.array([np.nan if v is None else v for v in pa[name]["per_layer"]], float)
        y = np.array([np.nan if v is None else v for v in pb[name]["per_layer"]], float)
        assert np.allclose(x, y, atol=TOL, equal_nan=True), (what, name, x, y)
        assert np.isfinite(x[[4, 12, 20]]).all(), (what, x)  # layers of both ranks were scored
        assert abs(pa[name]["score"] - pb[name]["score"]) < TOL, what


def test_health_reports_the_ranks(servers):
    _, two = servers
    body = httpx.get(two.url + "/health").json()
    ranks = body["ranks"]
    assert ranks["size"] == 2 and ranks["parallel"] == "pipeline"
    assert [r["layers"] for r in ranks["ranks"]] == [[15, 30], [0, 15]]


def test_plain_add_and_reflect_alone_and_batched_match_one_process(servers):
    one, two = servers
    ref = {name: _ask(one, extra) for name, extra in REQUESTS.items()}  # one at a time
    assert ref["add"].choices[0].message.content != ref["plain"].choices[0].message.content  # the steering acts
    plain_lp = [t.logprob for t in ref["plain"].choices[0].logprobs.content]
    reflect_lp = [t.logprob for t in ref["reflect"].choices[0].logprobs.content]
    assert not np.allclose(plain_lp[: len(reflect_lp)], reflect_lp[: len(plain_lp)], atol=10 * TOL)
    batched = _together(two, REQUESTS)  # all three in the same decode steps, across both ranks
    for name in REQUESTS:
        _assert_same(ref[name], batched[name], f"{name} batched on 2 ranks")
    alone = _ask(two, REQUESTS["reflect"])
    _assert_same(ref["reflect"], alone, "reflect alone on 2 ranks")


def test_cancelled_stream_leaves_the_ranks_in_step(servers):
    one, two = servers
    client = openai.OpenAI(base_url=two.url + "/v1", api_key="unused", timeout=600, max_retries=0)
    stream = client.chat.completions.create(model="default", messages=QUESTION, max_tokens=200, temperature=0, stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()  # the client goes away mid-generation: its row leaves the batch on every rank
    deadline = time.time() + 120
    while httpx.get(two.url + "/health").json()["batch_size"] and time.time() < deadline:
        time.sleep(0.5)
    assert httpx.get(two.url + "/health").json()["batch_size"] == 0
    _assert_same(_ask(one, REQUESTS["add"]), _ask(two, REQUESTS["add"]), "after a cancellation")


def test_a_guard_steering_mid_stream_acts_as_in_one_process(servers):
    """A per-token probe guard fires on rank 0 and re-steers the row on both ranks from the next step."""
    from test_guards_real_model import PROBE, STEER_ALPHA, TOKENS as GUARD_TOKENS, VECTOR, _fire_point, _per_token_scores, _stream

    one, two = servers
    clients = [openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0, timeout=600) for s in (one, two)]
    tokens, extras, _ = _stream(clients[0])
    scores = _per_token_scores(extras)
    t, above = _fire_point(scores, hi=GUARD_TOKENS - 4)
    rule = {"probe": PROBE, "above": above, "then": "steer", "steer": {VECTOR: STEER_ALPHA}}
    runs = [_stream(c, guard=[rule]) for c in clients]
    fired = [[(f["token_index"], f["action"]) for e in ex if e.get("guard") for f in e["guard"]["fired"]] for _, ex, _ in runs]
    assert fired[0] == fired[1] == [(t, "steer")]
    assert runs[0][0] == runs[1][0] and runs[0][0][t + 2:] != tokens[t + 2:]


def test_tensor_parallel_tiny_llama_matches_one_process(tiny_llama, tiny_model_dirs, tmp_path):
    """Split by heads: steered rows and probe scores as in one process (rank 0 scores alone: it sees every layer)."""
    model = str(tiny_model_dirs["llama"])
    make_vector(tiny_llama, "push", tmp_path / "vectors", seed=1, layers=(1, 2))
    make_probe(tiny_llama, "p", tmp_path / "probes", seed=3, layers=(0, 2, 3), best=2)
    libs = ["--model", model, "--vectors", str(tmp_path / "vectors"), "--probes", str(tmp_path / "probes")]
    one = ServerProcess(*libs)
    try:
        ref = _tiny_answers(one)
    finally:
        one.stop()
    two = ServerProcess(*libs, "--ranks", "2", "--parallel", "tensor")
    try:
        assert httpx.get(two.url + "/health").json()["ranks"]["parallel"] == "tensor"
        got = _tiny_answers(two)
    finally:
        two.stop()
    assert [g[0] for g in got] == [r[0] for r in ref]
    assert ref[0][0] != ref[1][0]  # the push changes the text
    for (_, la, pa), (_, lb, pb) in zip(ref, got):
        assert np.allclose(la, lb, atol=1e-4)
        assert np.allclose(pa, pb, atol=1e-4, equal_nan=True)


def _tiny_answers(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=300, max_retries=0)
    out = []
    for steer in ({}, {"push": 8.0}):
        r = client.completions.create(model="default", prompt="one two three four", max_tokens=8, temperature=0, logprobs=1,
                                      extra_body={"steer": steer, "probes": ["p"]})
        c = r.choices[0]
        per_layer = np.array([np.nan if v is None else v for v in c.model_extra["probes"]["p"]["per_layer"]], float)
        out.append((c.text, c.logprobs.token_logprobs, per_layer))
    return out


def test_an_idle_set_outlives_the_rank_timeout_and_a_rank_that_dies_while_idle_stops_it(tmp_path):
    server = _serve(tmp_path, "--ranks", "2", "--rank-timeout", "10")
    pid = _rank_pid(server, 1)
    try:
        r = httpx.post(server.url + "/v1/chat/completions", timeout=300,
                       json={"model": "default", "messages": QUESTION, "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200, r.text
        time.sleep(14)  # idle for longer than --rank-timeout: nobody is waiting on a rank, nothing fires
        assert server.alive() and httpx.get(server.url + "/health").status_code == 200
        os.kill(pid, signal.SIGKILL)
        server.proc.wait(timeout=60)
        assert server.proc.returncode == 70
        assert f"rank 1 (pid {pid}) exited with code -9" in server.log()
    finally:
        server.stop()


def _rank_pid(server, rank: int) -> int:
    ranks = httpx.get(server.url + "/health").json()["ranks"]["ranks"]
    return next(r["pid"] for r in ranks if r["rank"] == rank)


def _long_request(server, result: dict) -> None:
    try:
        r = httpx.post(server.url + "/v1/chat/completions", timeout=300, json={
            "model": "default", "messages": [{"role": "user", "content": "Write a long story about a dragon."}], "max_tokens": 400, "temperature": 0})
        result["status"], result["body"], result["at"] = r.status_code, r.json(), time.monotonic()
    except httpx.HTTPError as exc:
        result["error"] = exc


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_dead_or_hung_rank_fails_requests_with_503_and_exits_non_zero(tmp_path, how):
    server = _serve(tmp_path, "--ranks", "2", "--rank-timeout", "8")
    pid = _rank_pid(server, 1)
    try:
        result: dict = {}
        t = threading.Thread(target=_long_request, args=(server, result))
        t.start()
        time.sleep(4)  # the request is decoding on both ranks
        os.kill(pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        killed_at = time.monotonic()
        t.join(timeout=120)
        assert result.get("status") == 503, result
        assert result["body"]["error"]["type"] == "server_error"
        message = result["body"]["error"]["message"]
        assert f"rank 1 (pid {pid} on " in message and ("is gone" if how == "killed" else "is stopped") in message, message
        if how == "killed":  # seen at once, not after --rank-timeout
            assert result["at"] - killed_at < 8, result["at"] - killed_at
        server.proc.wait(timeout=60)
        assert server.proc.returncode == 70
        log = server.log()
        assert (f"rank 1 (pid {pid}" in log), log[-3000:]
    finally:
        if how == "stopped":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.stop()
