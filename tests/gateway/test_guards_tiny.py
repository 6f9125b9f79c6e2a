"""Guards (api.md section 4b) on the tiny llama: bad input, and the mechanics of stop, steer and cap.

The probes here are random linear maps, so nothing is claimed about what they
detect; the tests pin down what a guard does with a reading: when it fires,
which tokens it changes, and that the other rows of the batch never notice.
The real-model behaviour with the shipped artifacts is test_guards_real_model.py.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import API_KEY
from gateway_helpers import ServerProcess, make_probe, make_vector, sse_events

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EOS_BAN = {"258": -100}  # the tiny tokenizer's <|im_end|>: every run has its full length
TOKENS = 12
MAX_RULES, MAX_FOR = 3, 5
WEIGHT_SCALE = 0.02  # the tiny model's states are large: keep the random probes' scores off 0 and 1


@pytest.fixture(scope="module")
def guard_server(tiny_llama, tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("guard-artifacts")
    make_vector(tiny_llama, "push", root / "vectors", seed=1, layers=(1, 2), alpha=8.0)
    for name, position, seed in (("tok", None, 3), ("first", "prompt_last", 5), ("end", "answer_end", 6)):
        probe = make_probe(tiny_llama, name, None, seed=seed, layers=(1, 2, 3), best=2)
        probe.weights *= WEIGHT_SCALE
        if position:
            probe.metadata["position"] = position
        probe.save(root / "probes")
    presets = root / "presets.json"
    presets.write_text(json.dumps({"guarded": {"model": "default", "guard": [{"probe": "first", "above": 0.0, "then": "stop"}]}}))
    server = ServerProcess(
        "--model", str(tiny_model_dirs["llama"]), "--vectors", str(root / "vectors"), "--probes", str(root / "probes"),
        "--presets", str(presets), "--api-key", API_KEY,
        "--max-guard-rules", str(MAX_RULES), "--max-guard-tokens", str(MAX_FOR),
    )
    yield server
    server.stop()


def _post(server, body, path="/v1/chat/completions"):
    return httpx.post(server.url + path, json=body, headers=AUTH, timeout=120)


def _chat(server, prompt="watch me", **fields):
    body = {"model": "default", "messages": [{"role": "user", "content": prompt}], "max_tokens": TOKENS,
            "temperature": 0, "logit_bias": EOS_BAN, "logprobs": True, **fields}
    r = _post(server, body)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def _tokens(choice) -> list[str]:
    return [e["token"] for e in choice["logprobs"]["content"]]


def _first_new_max(scores, start=1, margin=1e-4):
    """A token t >= start whose score is above every earlier one: `above` just under it fires exactly at t."""
    for t in range(start, len(scores)):
        if scores[t] - max(scores[:t]) > margin:
            return t
    pytest.skip("no token whose score rises above all earlier ones")  # pragma: no cover - data-dependent guard


# -- bad input --------------------------------------------------------------------------------------

BAD = [
    ("not-a-list", {"probe": "tok", "above": 0.5, "then": "stop"}, "guard must be a list"),
    ("unknown-probe", [{"probe": "nope", "above": 0.5, "then": "stop"}], "guard[0]: unknown probe 'nope'"),
    ("unknown-vector", [{"probe": "tok", "above": 0.5, "then": "cap", "vector": "nope", "max": 1.0}], "guard[0]: unknown steering vector 'nope'"),
    ("unknown-steer-vector", [{"probe": "tok", "above": 0.5, "then": "steer", "steer": {"nope": 1.0}}], "guard[0].steer: unknown steering vector 'nope'"),
    ("above-high", [{"probe": "tok", "above": 1.5, "then": "stop"}], "guard[0].above must be in [0, 1], got 1.5"),
    ("above-negative", [{"probe": "tok", "above": -0.1, "then": "stop"}], "guard[0].above must be in [0, 1], got -0.1"),
    ("above-missing", [{"probe": "tok", "then": "stop"}], "guard[0].above is required"),
    ("for-zero", [{"probe": "tok", "above": 0.5, "for_tokens": 0, "then": "stop"}], f"guard[0].for_tokens must be in [1, {MAX_FOR}] (--max-guard-tokens), got 0"),
    ("for-above-limit", [{"probe": "tok", "above": 0.5, "for_tokens": MAX_FOR + 1, "then": "stop"}], f"guard[0].for_tokens must be in [1, {MAX_FOR}] (--max-guard-tokens), got {MAX_FOR + 1}"),
    ("for-not-int", [{"probe": "tok", "above": 0.5, "for_tokens": 2.5, "then": "stop"}], "guard[0].for_tokens must be an integer, got 2.5"),
    ("too-many", [{"probe": "tok", "above": 0.5, "then": "stop"}] * (MAX_RULES + 1), f"guard has {MAX_RULES + 1} rules; the limit is {MAX_RULES} (--max-guard-rules)"),
    ("bad-then", [{"probe": "tok", "above": 0.5, "then": "explode"}], "guard[0].then must be one of stop, steer, cap; got 'explode'"),
    ("steer-missing", [{"probe": "tok", "above": 0.5, "then": "steer"}], "guard[0]: then 'steer' needs steer"),
    ("steer-alpha", [{"probe": "tok", "above": 0.5, "then": "steer", "steer": {"push": 1e9}}], "guard[0].steer.push: |alpha| must be at most"),
    ("cap-max-missing", [{"probe": "tok", "above": 0.5, "then": "cap", "vector": "push"}], "guard[0]: then 'cap' needs max"),
    ("field-of-other-action", [{"probe": "tok", "above": 0.5, "then": "stop", "max": 2}], "guard[0].max is not used with then: 'stop'"),
    ("unknown-field", [{"probe": "tok", "above": 0.5, "then": "stop", "when": 1}], "guard[0] has unknown field 'when'"),
    ("answer-end-probe", [{"probe": "end", "above": 0.5, "then": "stop"}], "probe 'end' is read at answer_end"),
    ("prompt-probe-for", [{"probe": "first", "above": 0.5, "for_tokens": 2, "then": "stop"}], "guard[0].for_tokens must be 1 for probe 'first'"),
]


@pytest.mark.parametrize("guard,message", [(g, m) for _, g, m in BAD], ids=[c[0] for c in BAD])
def test_bad_guard_is_a_400_naming_the_field(guard_server, guard, message):
    r = _post(guard_server, {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "guard": guard})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "guard" and err["type"] == "invalid_request_error"
    assert message in err["message"], err["message"]


# -- stop --------------------------------------------------------------------------------------------


def test_stop_ends_the_choice_after_the_token_that_fired(guard_server):
    plain = _chat(guard_server, probes={"tok": {"per_token": True}})
    scores = plain["probes"]["tok"]["per_token"]
    t = _first_new_max(scores)
    rule = {"probe": "tok", "above": scores[t] - 1e-5, "then": "stop"}
    guarded = _chat(guard_server, probes={"tok": {"per_token": True}}, guard=[rule])
    assert guarded["finish_reason"] == "content_filter"
    assert _tokens(guarded) == _tokens(plain)[: t + 1]
    assert guarded["probes"]["tok"]["per_token"] == scores[: t + 1]
    (fired,) = guarded["guard"]["fired"]
    assert fired == {"rule": 0, "token_index": t, "score": pytest.approx(scores[t], abs=1e-5), "action": "stop"}
    # a threshold no token reaches: the same text as without the guard, and an empty report
    quiet = _chat(guard_server, guard=[{"probe": "tok", "above": max(scores) + 1e-3, "then": "stop"}])
    assert quiet["finish_reason"] == "length" and _tokens(quiet) == _tokens(plain) and quiet["guard"] == {"fired": []}


def test_for_tokens_needs_a_run(guard_server):
    plain = _chat(guard_server, probes={"tok": {"per_token": True}})
    scores = plain["probes"]["tok"]["per_token"]
    above = sorted(scores)[len(scores) // 2]  # about half the tokens are at or above
    runs, first_end = 0, {}
    for i, s in enumerate(scores):
        runs = runs + 1 if s >= above else 0
        for need in (1, 2, 3):
            if runs >= need:
                first_end.setdefault(need, i)
    for need, end in first_end.items():
        g = _chat(guard_server, guard=[{"probe": "tok", "above": above, "for_tokens": need, "then": "stop"}])
        assert g["finish_reason"] == "content_filter" and g["guard"]["fired"][0]["token_index"] == end


def test_stop_in_a_stream_says_content_filter_on_the_chunk(guard_server):
    plain = _chat(guard_server, probes={"tok": {"per_token": True}})
    scores = plain["probes"]["tok"]["per_token"]
    t = _first_new_max(scores)
    body = {"model": "default", "messages": [{"role": "user", "content": "watch me"}], "max_tokens": TOKENS,
            "temperature": 0, "logit_bias": EOS_BAN, "stream": True,
            "guard": [{"probe": "tok", "above": scores[t] - 1e-5, "then": "stop"}]}
    r = _post(guard_server, body)
    chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
    with_guard = [c for c in chunks if "guard" in c["choices"][0]]
    assert len(with_guard) == 1 and with_guard[0]["choices"][0]["guard"]["fired"][0]["token_index"] == t
    assert with_guard[0]["choices"][0]["delta"].get("content") is not None  # the token that fired rides with it
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert all("probes" not in c["choices"][0] for c in chunks)  # guard-only probes are not reported


# -- steer and cap ----------------------------------------------------------------------------------


def test_steer_changes_only_the_tokens_after_the_next(guard_server):
    plain = _chat(guard_server, probes={"tok": {"per_token": True}})
    scores = plain["probes"]["tok"]["per_token"][: TOKENS - 3]
    t = _first_new_max(scores)
    rule = {"probe": "tok", "above": scores[t] - 1e-5, "then": "steer", "steer": {"push": 40.0}}
    guarded = _chat(guard_server, guard=[rule])
    assert guarded["guard"]["fired"] == [{"rule": 0, "token_index": t, "score": pytest.approx(scores[t], abs=1e-5), "action": "steer"}]
    # token t+1 was sampled before the reading of t existed; from t+2 on the text is steered
    assert _tokens(guarded)[: t + 2] == _tokens(plain)[: t + 2]
    assert _tokens(guarded)[t + 2:] != _tokens(plain)[t + 2:]


def test_prompt_guard_steers_the_whole_generation(guard_server):
    steered = _chat(guard_server, steer={"push": 40.0})
    plain = _chat(guard_server)
    assert _tokens(steered) != _tokens(plain)
    fires = _chat(guard_server, guard=[{"probe": "first", "above": 0.0, "then": "steer", "steer": {"push": 40.0}}])
    assert fires["guard"]["fired"] == [{"rule": 0, "token_index": None, "score": pytest.approx(fires["guard"]["fired"][0]["score"]), "action": "steer"}]
    assert _tokens(fires) == _tokens(steered)  # conditional steering: as if the request had asked for it
    quiet = _chat(guard_server, guard=[{"probe": "first", "above": 1.0, "then": "steer", "steer": {"push": 40.0}}])
    assert quiet["guard"]["fired"] == [] and _tokens(quiet) == _tokens(plain)


def test_prompt_guard_cap_equals_a_cap_from_the_start(guard_server):
    capped = _chat(guard_server, steer=[{"vector": "push", "op": "cap", "value": -2.0, "layers": [1, 2]}])
    plain = _chat(guard_server)
    assert _tokens(capped) != _tokens(plain)
    fires = _chat(guard_server, guard=[{"probe": "first", "above": 0.0, "then": "cap", "vector": "push", "max": -2.0, "layers": [1, 2]}])
    assert fires["guard"]["fired"][0]["action"] == "cap" and _tokens(fires) == _tokens(capped)


def test_prompt_guard_stop_and_preset_guard(guard_server):
    stopped = _chat(guard_server, guard=[{"probe": "first", "above": 0.0, "then": "stop"}])
    assert stopped["finish_reason"] == "content_filter" and stopped["message"]["content"] == ""
    assert stopped["guard"]["fired"][0]["token_index"] is None
    by_preset = _chat(guard_server, model="guarded")
    assert by_preset["finish_reason"] == "content_filter" and by_preset["guard"]["fired"][0]["rule"] == 0


def test_guards_are_per_row_in_one_batch(guard_server):
    """Two prompts of one /v1/completions request decode in one batch; each equals itself run alone."""
    prompts = ["the first prompt", "another one, longer than the first"]

    def complete(prompt, guard=None):
        body = {"model": "default", "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, "logit_bias": EOS_BAN,
                "logprobs": 0, "probes": {"tok": {"per_token": True}}}
        if guard:
            body["guard"] = guard
        r = _post(guard_server, body, "/v1/completions")
        assert r.status_code == 200, r.text
        return r.json()["choices"]

    (a_plain,) = complete(prompts[0])
    scores = a_plain["probes"]["tok"]["per_token"][: TOKENS - 3]
    t = _first_new_max(scores)
    guard = [{"probe": "tok", "above": scores[t] - 1e-5, "then": "steer", "steer": {"push": 40.0}}]
    alone = [complete(p, guard)[0] for p in prompts]
    together = complete(prompts, guard)
    for a, b in zip(alone, together):
        assert a["logprobs"]["tokens"] == b["logprobs"]["tokens"] and a["guard"] == b["guard"]
    assert together[0]["guard"]["fired"][0]["token_index"] == t
    assert together[0]["logprobs"]["tokens"] != a_plain["logprobs"]["tokens"]
    # and a guarded request next to an unguarded one (separate requests, sharing the batch)
    plain_b = complete(prompts[1])[0]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda args: complete(*args)[0], [(prompts[0], guard), (prompts[1], None)]))
    assert got[0]["logprobs"]["tokens"] == alone[0]["logprobs"]["tokens"]
    assert got[1]["logprobs"]["tokens"] == plain_b["logprobs"]["tokens"] and "guard" not in got[1]


def test_tok_probe_is_not_saturated(guard_server):
    """The thresholds above are read off the scores: they must spread inside (0, 1)."""
    scores = _chat(guard_server, probes={"tok": {"per_token": True}})["probes"]["tok"]["per_token"]
    print(scores)
    assert all(0.001 < s < 0.999 for s in scores) and max(scores) - min(scores) > 0.05


def test_cap_acts_from_the_next_token_while_the_rule_holds(guard_server):
    plain = _chat(guard_server, probes={"tok": {"per_token": True}})
    scores = plain["probes"]["tok"]["per_token"][: TOKENS - 3]
    t = _first_new_max(scores)
    rule = {"probe": "tok", "above": scores[t] - 1e-5, "then": "cap", "vector": "push", "max": -50.0, "layers": [1, 2]}
    capped = _chat(guard_server, probes={"tok": {"per_token": True}}, guard=[rule])
    fired = capped["guard"]["fired"]
    assert fired[0] == {"rule": 0, "token_index": t, "score": pytest.approx(scores[t], abs=1e-5), "action": "cap"}
    assert _tokens(capped)[: t + 2] == _tokens(plain)[: t + 2]
    assert _tokens(capped)[t + 2:] != _tokens(plain)[t + 2:]
    # every engagement is a token whose reading reached the threshold after one that did not
    got = capped["probes"]["tok"]["per_token"]
    above = scores[t] - 1e-5
    starts = [i for i, s in enumerate(got) if s >= above and (i == 0 or got[i - 1] < above)]
    assert [f["token_index"] for f in fired] == starts
