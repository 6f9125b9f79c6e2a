"""Batching behaviour through a real server: isolation between rows, queue limits, disconnects."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import API_KEY
from gateway_helpers import ServerProcess

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EOS_BAN = {"258": -100}  # the tiny tokenizer's <|im_end|>: never stop early
# No wall-clock limits here (speed lives in bench/): a request that leaked would hold the
# only batch slot for 200000 tokens, so the waits below would never end and pytest-timeout
# fails the test instead.


def _chat(url, max_tokens=8, timeout=60, **fields):
    body = {"model": "default", "messages": [{"role": "user", "content": "isolate me"}], "max_tokens": max_tokens,
            "temperature": 0, **fields}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=timeout)


def test_greedy_output_does_not_depend_on_the_batch(tiny_server):
    url = tiny_server.url
    variants = [{}, {"steer": {"push": 40.0}}, {"steer": {"pull": 20.0}}, {"probes": ["alpha_probe"]}, {"logprobs": True}, {}]
    alone = [_chat(url, 16, **v).json()["choices"][0]["message"]["content"] for v in variants]
    with ThreadPoolExecutor(len(variants)) as pool:
        together = list(pool.map(lambda v: _chat(url, 16, **v).json()["choices"][0]["message"]["content"], variants))
    assert together == alone
    assert alone[0] != alone[1]  # the steered neighbour really was different


@pytest.fixture(scope="module")
def narrow_server(tiny_model_dirs):
    """One row at a time and one waiting request: makes queueing and cancellation observable."""
    server = ServerProcess(
        "--model", str(tiny_model_dirs["llama"]), "--api-key", API_KEY,
        "--max-batch", "1", "--max-queue", "1", "--max-tokens", "200000",
    )
    yield server
    server.stop()


def _queue_depth(url) -> int:
    return httpx.get(url + "/health", timeout=30).json()["queue_depth"]


def _wait_for(predicate) -> None:
    while not predicate():
        time.sleep(0.05)


def _health(url) -> dict:
    return httpx.get(url + "/health", timeout=30).json()


def _wait_until_idle(url) -> None:
    """Nothing queued and nothing decoding: every earlier request has finished or was cancelled."""
    _wait_for(lambda: (h := _health(url))["queue_depth"] == 0 and h["batch_size"] == 0)


def _long_body():
    return {"model": "default", "messages": [{"role": "user", "content": "go on"}], "max_tokens": 200000,
            "temperature": 0, "logit_bias": EOS_BAN, "stream": True}


def test_queue_full_answers_429_and_a_dropped_stream_frees_its_slot(narrow_server):
    url = narrow_server.url
    with httpx.Client(timeout=60, headers=AUTH) as c:
        with c.stream("POST", url + "/v1/chat/completions", json=_long_body()) as running:
            assert running.status_code == 200
            lines = running.iter_lines()  # keep a reference: dropping it would close the stream
            next(lines)
            waiting_result = {}

            def waiting():
                waiting_result["response"] = _chat(url, 4)
                waiting_result["done_at"] = time.time()

            t = threading.Thread(target=waiting)
            t.start()
            _wait_for(lambda: _queue_depth(url) == 1)
            refused = _chat(url, 4)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["type"] == "rate_limit_error"
            assert "response" not in waiting_result  # still queued behind the stream
        # leaving the block closed the stream: the waiting request must now run (a leaked
        # stream would keep it queued for 200000 tokens)
        t.join()
        assert waiting_result["response"].status_code == 200
        assert waiting_result["response"].json()["usage"]["completion_tokens"] <= 4
        _wait_until_idle(url)


def test_non_streaming_client_that_leaves_is_cancelled(narrow_server):
    url = narrow_server.url
    body = {**_long_body(), "stream": False}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json=body, headers=AUTH, timeout=1.5)
    _wait_until_idle(url)  # the abandoned row left the batch
    r = _chat(url, 4)
    assert r.status_code == 200
    _wait_until_idle(url)


def test_client_that_leaves_while_queued_is_never_run(narrow_server):
    url = narrow_server.url
    with httpx.Client(timeout=60, headers=AUTH) as c:
        with c.stream("POST", url + "/v1/chat/completions", json=_long_body()) as running:
            lines = running.iter_lines()
            next(lines)
            with pytest.raises(httpx.ReadTimeout):  # queued behind the stream, then gives up
                httpx.post(url + "/v1/chat/completions", json={**_long_body(), "stream": False}, headers=AUTH, timeout=1.5)
    # Had the abandoned request been admitted after the stream closed, it would hold the
    # only slot for 200000 tokens and the server would never be idle.
    _wait_until_idle(url)
    r = _chat(url, 4)
    assert r.status_code == 200
    assert narrow_server.alive()
