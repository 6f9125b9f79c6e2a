"""Pieces of the gateway that need no server: stop strings, steering specs, limits, strict JSON, prompt cache."""

import argparse

import numpy as np
import pytest

from mlx_interp.gateway.errors import BadRequest
from mlx_interp.gateway.jsonio import dumps, loads
from mlx_interp.gateway.limits import Limits, add_limit_arguments, limits_from
from mlx_interp.gateway.stops import StopMatcher
from mlx_interp.gateway import steer_spec


def run_stops(stops, pieces):
    m = StopMatcher(stops)
    out, stopped = [], False
    for p in pieces:
        text, stopped = m.feed(p)
        out.append(text)
        if stopped:
            break
    if not stopped:
        out.append(m.flush())
    return out, stopped


def test_stop_string_across_tokens_is_never_shown():
    out, stopped = run_stops(["END"], ["abc E", "N", "D tail"])
    assert stopped and "".join(out) == "abc "
    assert out == ["abc ", "", ""]  # "E" and "N" were held back, then dropped


def test_false_start_of_a_stop_string_is_released():
    out, stopped = run_stops(["END"], ["a E", "NX", " b"])
    assert not stopped and "".join(out) == "a ENX b"
    assert out[0] == "a "  # only the possible prefix was held


def test_earliest_of_several_stop_strings_wins():
    out, stopped = run_stops(["zz", "b"], ["a", "bzz"])
    assert stopped and "".join(out) == "a"


def test_no_stops_passes_text_through():
    assert run_stops([], ["x", "y"]) == (["x", "y", ""], False)


def test_steer_header_and_body_forms():
    limits = Limits()
    (a, b) = steer_spec.parse_header("green_red=1.5, calm = -0.5", limits)
    assert (a.vector, a.alpha, b.vector, b.alpha) == ("green_red", 1.5, "calm", -0.5)
    (c,) = steer_spec.parse_header("calm", limits)
    assert c.alpha is None
    (d,) = steer_spec.parse_body([{"vector": "v", "alpha": [1, 2, 3], "layers": "1-2", "scope": "generation"}], 3, limits)
    assert d.alpha == (1.0, 2.0, 3.0) and d.layers == "1-2" and d.scope == "generation"
    with pytest.raises(BadRequest, match="at most"):
        steer_spec.parse_body({"v": 1e9}, 1, limits)
    with pytest.raises(BadRequest, match="one value per choice"):
        steer_spec.parse_body({"v": [1, 2]}, 3, limits)


def test_build_plan_uses_the_vector_intervention(tiny_llama, tmp_path):
    from mlx_interp.gateway.catalog import Shelf
    from gateway_helpers import make_vector
    from mlx_interp.steering.vectors import VectorLibrary

    make_vector(tiny_llama, "v", tmp_path, seed=5)
    lib = VectorLibrary(tmp_path, fingerprint=tiny_llama.fingerprint, hidden_size=tiny_llama.hidden_size, num_layers=tiny_llama.num_layers)
    assert lib.load_all() == []
    shelf = Shelf([lib])
    entries = steer_spec.parse_body([{"vector": "v", "alpha": [0.5, -2.0], "op": "add", "layers": [3]}], 2, Limits())
    plan = steer_spec.build_plan(entries, 2, shelf, Limits())
    assert [c[0].alpha for c in plan.per_choice] == [0.5, -2.0]
    assert plan.per_choice[0][0].layers == (3,)
    assert plan.applied == [
        {"vector": "v", "alpha": [0.5, -2.0], "op": "add", "layers": [3], "scope": "all", "sha256": lib.get("v").sha256,
         "per_layer_alpha": [0.5, -2.0], "alpha_unit": "per_layer", "warnings": []}
    ]
    with pytest.raises(BadRequest) as err:
        steer_spec.build_plan(steer_spec.parse_body({"w": 1}, 1, Limits()), 1, shelf, Limits())
    assert err.value.param == "steer"


def _calibrated_library(tiny_llama, tmp_path):
    """A class-mean vector 'cm' over layers 1-3, calibrated coherent on [-1, 2]."""
    from mlx_interp.gateway.catalog import Shelf
    from mlx_interp.steering.vectors import SteeringVector, VectorLibrary, build_metadata

    rng = np.random.default_rng(7)
    base = rng.standard_normal(tiny_llama.hidden_size)
    directions = np.stack([base * (1 + l) for l in range(tiny_llama.num_layers)]).astype(np.float32)
    meta = build_metadata("cm", hidden_size=tiny_llama.hidden_size, num_layers=tiny_llama.num_layers, method="mean_diff",
                          recommended_layers=[1, 2, 3], model_fingerprint=tiny_llama.fingerprint)
    meta["calibrated"] = True
    meta["calibration"] = {"coherent_range": [-1.0, 2.0], "recommended_alpha": 2.0}
    SteeringVector("cm", directions, meta).save(tmp_path)
    lib = VectorLibrary(tmp_path, fingerprint=tiny_llama.fingerprint, hidden_size=tiny_llama.hidden_size, num_layers=tiny_llama.num_layers)
    assert lib.load_all() == []
    return Shelf([lib])


def test_echo_reports_the_per_layer_alpha_and_warns_beyond_the_coherent_range(tiny_llama, tmp_path):
    shelf = _calibrated_library(tiny_llama, tmp_path)
    plan = steer_spec.build_plan(steer_spec.parse_body({"cm": [1.5, 3.0]}, 2, Limits()), 2, shelf, Limits())
    (applied,) = plan.applied
    assert applied["alpha_unit"] == "class_mean_total"
    # directions (1+l)·base at layers 1-3 are parallel: c = alpha / 3, whatever their sizes
    assert applied["per_layer_alpha"] == pytest.approx([0.5, 1.0])
    assert len(applied["warnings"]) == 1 and "alpha 3" in applied["warnings"][0] and "[-1, 2]" in applied["warnings"][0]
    assert [c[0].alpha for c in plan.per_choice] == [1.5, 3.0]  # applied anyway
    inside = steer_spec.build_plan(steer_spec.parse_body({"cm": 2.0}, 1, Limits()), 1, shelf, Limits())
    assert inside.applied[0]["warnings"] == [] and inside.applied[0]["per_layer_alpha"] == pytest.approx(2 / 3)
    reflect = steer_spec.build_plan(steer_spec.parse_body([{"vector": "cm", "op": "reflect", "alpha": 1.0}], 1, Limits()), 1, shelf, Limits())
    assert reflect.applied[0]["per_layer_alpha"] == 1.0 and reflect.applied[0]["warnings"] == []


@pytest.mark.parametrize(
    "steer, limit, value",
    [
        ({"cm": 51}, "50", "51"),
        ([{"vector": "cm", "op": "reflect", "alpha": 4.5}], "4", "4.5"),
        ([{"vector": "cm", "op": "ablate", "alpha": -1.6}], "1.5", "-1.6"),
        ([{"vector": "cm", "op": "clamp", "value": 20000}], "10000", "20000"),
    ],
)
def test_each_op_has_its_own_hard_limit(steer, limit, value):
    with pytest.raises(BadRequest) as err:
        steer_spec.parse_body(steer, 1, Limits())
    assert err.value.param == "steer"
    assert f"at most {limit} " in str(err.value) and value in str(err.value)


def test_reflect_and_ablate_within_their_limits_are_accepted():
    (r,) = steer_spec.parse_body([{"vector": "cm", "op": "reflect", "alpha": 2.0}], 1, Limits())
    (a,) = steer_spec.parse_body([{"vector": "cm", "op": "ablate", "alpha": 1.5}], 1, Limits())
    assert (r.alpha, a.alpha) == (2.0, 1.5)


def test_limits_from_flags_and_environment():
    parser = argparse.ArgumentParser()
    add_limit_arguments(parser)
    args = parser.parse_args(["--max-n", "3"])
    limits = limits_from(args, environ={"MLX_INTERP_MAX_QUEUE": "5", "MLX_INTERP_MAX_N": "9"})
    assert limits.max_n == 3 and limits.max_queue == 5 and limits.max_body_bytes == Limits().max_body_bytes
    with pytest.raises(ValueError, match="MLX_INTERP_MAX_QUEUE"):
        limits_from(None, environ={"MLX_INTERP_MAX_QUEUE": "many"})
    with pytest.raises(ValueError, match="positive"):
        limits_from(parser.parse_args(["--max-alpha", "0"]), environ={})


def test_strict_json():
    with pytest.raises(BadRequest, match="NaN"):
        loads(b'{"a": NaN}')
    with pytest.raises(ValueError):
        dumps({"a": float("inf")})
    assert loads(dumps({"a": [1, 2.5, "é"]})) == {"a": [1, 2.5, "é"]}


def test_prompt_cache_reuses_a_prefix_without_changing_results(tiny_llama):
    """A prefix taken from the cache gives the logits of a fresh prefill, and the stored entry stays intact."""
    import threading

    from mlx_interp.gateway.prompt_cache import PromptCache
    from mlx_interp.steering.generation import steering_session

    result = {}

    def run():  # mlx arrays belong to the thread that made them: do it all in one thread
        cache = PromptCache(entries=2)
        with steering_session(tiny_llama) as batch:
            first = [5, 6, 7, 8, 9, 10]
            pre = batch.prefill(first)
            cache.store((), first, pre.cache)
            second = [5, 6, 7, 8, 40, 41, 42]
            reused, n = cache.lookup((), second)
            warm = batch.prefill(second, cache=reused, cached_tokens=n)
            cold = batch.prefill(second)
            again, m = cache.lookup((), first)
            whole = batch.prefill(first, cache=again, cached_tokens=m)
            # a reuse that writes over position 5 of its copy must leave the entry's position 5 alone
            fork, k = cache.lookup((), [5, 6, 7, 8, 9, 99])
            batch.prefill([5, 6, 7, 8, 9, 99], cache=fork, cached_tokens=k)
            longer = first + [11]
            reused2, n2 = cache.lookup((), longer)
            result["n2"] = n2
            result["warm2"] = np.array(batch.prefill(longer, cache=reused2, cached_tokens=n2).logits)
            result["cold2"] = np.array(batch.prefill(longer).logits)
            result.update(n=n, m=m, warm=np.array(warm.logits), cold=np.array(cold.logits),
                          whole=np.array(whole.logits), first=np.array(pre.logits),
                          other=cache.lookup(("steered",), first)[1])

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert result["n"] == 4 and result["m"] == 6
    np.testing.assert_allclose(result["warm"], result["cold"], atol=1e-4)
    np.testing.assert_allclose(result["whole"], result["first"], atol=1e-4)
    assert result["n2"] == 6
    np.testing.assert_allclose(result["warm2"], result["cold2"], atol=1e-4)
    assert result["other"] == 0  # different prompt steering never shares a cache


def test_serve_refuses_a_public_address_without_a_key():
    import os
    import subprocess
    import sys

    from gateway_helpers import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("MLX_INTERP_API_KEY",)}
    r = subprocess.run([sys.executable, "-m", "mlx_interp.cli", "serve", "--host", "0.0.0.0", "--model", "/nonexistent"],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "without an API key" in lines[0] and "Traceback" not in r.stderr


def test_every_limit_has_a_flag_and_a_doc():
    from mlx_interp.gateway.limits import limit_docs

    parser = argparse.ArgumentParser()
    add_limit_arguments(parser)
    flags = {a.dest for a in parser._actions}
    for name, default, doc in limit_docs():
        assert name in flags and doc
        # every limit is on by default; max_batch's 0 means "fitted to the machine" (gateway/batch_size.py)
        assert default > 0 or (name == "max_batch" and default == 0 and "fitted" in doc)


def test_a_request_that_fails_in_the_model_thread_fails_alone(tiny_llama):
    """A broken request gets a 500 error event; the thread lives on and serves the next one."""
    import asyncio

    from mlx_interp.gateway.engine import Engine
    from mlx_interp.gateway.events import ChoiceEnd, Failed, Job, TokenOut
    from mlx_interp.gateway.protocol import CHAT, ChoiceSpec, GenerationSpec
    from mlx_interp.gateway.sampling import SamplingParams
    from mlx_interp.steering.interventions import Intervention

    engine = Engine(tiny_llama, Limits())
    engine.start()
    wrong_width = Intervention("bad", np.ones((tiny_llama.num_layers, tiny_llama.hidden_size + 1), np.float32))

    def spec(ivs):
        return GenerationSpec(kind=CHAT, model="default", max_tokens=3, sampling=SamplingParams(temperature=0.0),
                              choices=[ChoiceSpec(0, (5, 6, 7), ivs)])

    async def run(s):
        job = Job(s, asyncio.get_running_loop(), asyncio.Queue())
        engine.submit(job)
        seen = []
        while not any(isinstance(e, (ChoiceEnd, Failed)) for e in seen):
            seen += await asyncio.wait_for(job.events.get(), 60)
        return seen

    try:
        failed = asyncio.run(run(spec((wrong_width,))))
        ok = asyncio.run(run(spec(())))
    finally:
        engine.stop()
    assert isinstance(failed[-1], Failed) and failed[-1].error.status == 500
    assert "Traceback" not in failed[-1].error.message
    assert isinstance(ok[-1], ChoiceEnd) and sum(isinstance(e, TokenOut) for e in ok) == ok[-1].completion_tokens > 0
    assert engine.alive is False  # stopped cleanly, hooks removed
    from mlx_interp.steering.hooks import hooks_installed

    assert not hooks_installed(tiny_llama.model)


def test_a_failing_step_fails_every_job_in_it_even_one_that_just_finished(tiny_llama, monkeypatch, caplog):
    """A step that raises posts none of its events, so a row that ended in that step must fail too, not hang."""
    import asyncio

    from mlx_interp.gateway.engine import Engine
    from mlx_interp.gateway.events import Failed, Job
    from mlx_interp.gateway.protocol import CHAT, ChoiceSpec, GenerationSpec
    from mlx_interp.gateway.rows import RowState
    from mlx_interp.gateway.sampling import SamplingParams

    engine = Engine(tiny_llama, Limits())

    def spec(max_tokens):
        return GenerationSpec(kind=CHAT, model="default", max_tokens=max_tokens, sampling=SamplingParams(temperature=0.0),
                              choices=[ChoiceSpec(0, (5, 6, 7), ())])

    async def run():
        loop = asyncio.get_running_loop()
        short, broken = Job(spec(1), loop, asyncio.Queue()), Job(spec(4), loop, asyncio.Queue())
        emit = RowState._emit

        def failing_emit(row, *args):
            if row.job is broken:
                raise RuntimeError("detokenizer exploded")
            return emit(row, *args)

        monkeypatch.setattr(RowState, "_emit", failing_emit)
        for job in (short, broken):  # queued before the thread starts, so both join the same step
            engine._queued += 1
            engine._inbox.put(job)
        engine.start()
        seen = {}
        for job in (short, broken):
            events = []
            while not any(isinstance(e, Failed) for e in events):
                events += await asyncio.wait_for(job.events.get(), 60)
            seen[job is short] = events
        return seen

    try:
        seen = asyncio.run(run())
    finally:
        engine.stop()
    assert isinstance(seen[True][-1], Failed) and seen[True][-1].error.status == 500
    assert isinstance(seen[False][-1], Failed) and seen[False][-1].error.status == 500
    errors = [r for r in caplog.records if r.name == "mlx_interp.gateway" and r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is None  # one line for the failed step, no traceback
    assert "detokenizer exploded" in errors[0].getMessage()


def test_jobs_cancelled_while_queued_give_their_queue_places_back_at_once(tiny_llama):
    """With the batch busy, queued jobs whose clients left must not keep the queue full (429) until a slot opens."""
    import asyncio

    from mlx_interp.gateway.engine import Engine
    from mlx_interp.gateway.events import Job
    from mlx_interp.gateway.errors import QueueFull
    from mlx_interp.gateway.protocol import CHAT, ChoiceSpec, GenerationSpec
    from mlx_interp.gateway.sampling import SamplingParams

    engine = Engine(tiny_llama, Limits(max_batch=1, max_queue=2))
    engine.start()

    never_eos = tuple((t, -100.0) for t in tiny_llama.tokenizer.eos_token_ids)

    def spec(max_tokens):
        return GenerationSpec(kind=CHAT, model="default", max_tokens=max_tokens,
                              sampling=SamplingParams(temperature=0.0, logit_bias=never_eos),
                              choices=[ChoiceSpec(0, (5, 6, 7), ())])

    async def run():
        loop = asyncio.get_running_loop()
        busy = Job(spec(1_000_000), loop, asyncio.Queue())
        engine.submit(busy)
        await asyncio.wait_for(busy.events.get(), 60)  # running: it holds the only slot
        queued = [Job(spec(4), loop, asyncio.Queue()) for _ in range(2)]
        for job in queued:
            engine.submit(job)
        with pytest.raises(QueueFull):
            engine.submit(Job(spec(4), loop, asyncio.Queue()))
        for job in queued:
            job.cancelled = True
        while engine.queue_depth:  # never empties if cancelled jobs stayed queued: pytest-timeout fails it
            await asyncio.sleep(0.01)
        depth = engine.queue_depth
        engine.submit(Job(spec(4), loop, asyncio.Queue()))  # room again while the busy job still runs
        busy.cancelled = True
        return depth

    try:
        depth = asyncio.run(run())
    finally:
        engine.stop()
    assert depth == 0


def test_a_replaced_probe_is_read_with_its_own_weights_while_the_old_one_runs(tiny_llama):
    """A probe re-uploaded under the same name while a request still reads the old one: each gets its own weights."""
    import asyncio

    from mlx_interp.gateway.engine import Engine
    from mlx_interp.gateway.events import Job, PromptRead
    from mlx_interp.gateway.probe_spec import ProbeRequest
    from mlx_interp.gateway.protocol import CHAT, ChoiceSpec, GenerationSpec
    from mlx_interp.gateway.sampling import SamplingParams
    from gateway_helpers import make_probe
    from mlx_interp.probes.scoring import ProbeBank
    from mlx_interp.steering.generation import steering_session

    old, new = make_probe(tiny_llama, "p", None, seed=1), make_probe(tiny_llama, "p", None, seed=2)
    prompt = (5, 6, 7)
    with steering_session(tiny_llama, capture_layers=None) as batch:
        hidden = batch.prefill(list(prompt)).hidden_last
        expected = np.array(ProbeBank([new], tiny_llama.num_layers, tiny_llama.hidden_size).scores(hidden[None]))[0].T
    never_eos = tuple((t, -100.0) for t in tiny_llama.tokenizer.eos_token_ids)

    def spec(probe, max_tokens):
        return GenerationSpec(kind=CHAT, model="default", max_tokens=max_tokens,
                              sampling=SamplingParams(temperature=0.0, logit_bias=never_eos),
                              choices=[ChoiceSpec(0, prompt, ())], probes=(ProbeRequest(probe),))

    engine = Engine(tiny_llama, Limits())
    engine.start()

    async def run():
        loop = asyncio.get_running_loop()
        # The running request would take hours: the new probe's reading must not wait for it to end.
        running = Job(spec(old, 1_000_000), loop, asyncio.Queue())
        engine.submit(running)
        await asyncio.wait_for(running.events.get(), 60)  # admitted: it reads the old probe
        scoring = Job(spec(new, 0), loop, asyncio.Queue())
        engine.submit(scoring)
        try:
            while True:
                for ev in await asyncio.wait_for(scoring.events.get(), 60):
                    if isinstance(ev, PromptRead):
                        return ev.reading
        finally:
            running.cancelled = True

    try:
        reading = asyncio.run(run())
    finally:
        engine.stop()
    np.testing.assert_allclose(reading, expected, atol=1e-5)


# -- issue 14: safe numerics, bounded caches ----------------------------------------------------------


@pytest.mark.parametrize("params", [{"temperature": 1e-40}, {"temperature": 1e-300}, {"top_p": 1e-300}, {"top_p": 1e-40},
                                    {"temperature": 1e-40, "top_p": 1e-300}])
def test_tiny_temperature_and_top_p_choose_the_greedy_token(params):
    import mlx.core as mx

    from mlx_interp.gateway.sampling import RowSampler, SamplingParams, sample

    rng = np.random.default_rng(0)
    logits = mx.array(rng.standard_normal((3, 500)).astype(np.float32) * 5)
    samplers = [RowSampler(SamplingParams(logprobs=True, seed=i, **params), 500, i) for i in range(3)]
    out = sample(logits, samplers)
    np.testing.assert_array_equal(np.array(out.tokens), np.argmax(np.array(logits), axis=-1))
    lp = np.array(out.logprob)
    assert np.all(np.isfinite(lp))
    expected = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True)).max(axis=-1)
    np.testing.assert_allclose(lp, expected, atol=1e-5)  # the most likely token's logprob, not -20


def test_prompt_cache_is_bounded_in_bytes(tiny_llama):
    from mlx_interp.gateway.prompt_cache import PromptCache, cache_bytes
    from mlx_interp.steering.generation import steering_session

    with steering_session(tiny_llama) as batch:
        caches = [batch.prefill(list(range(3 + i, 40 + i))).cache for i in range(6)]
    one = cache_bytes(caches[0])
    assert one > 0
    cache = PromptCache(entries=100, max_bytes=int(2.5 * one))
    for i, c in enumerate(caches):
        cache.store((), tuple(range(3 + i, 40 + i)), c)
        assert cache.nbytes <= 2.5 * one
    assert len(cache._store) == 2
    assert cache.lookup((), tuple(range(8, 45)))[1] == 37  # the newest stays
    assert cache.lookup((), tuple(range(3, 40)))[1] < 37  # the oldest went
    small = PromptCache(entries=100, max_bytes=one // 2)
    small.store((), tuple(range(3, 40)), caches[0])  # larger than the whole budget: not kept
    assert small.nbytes == 0 and small.lookup((), tuple(range(3, 40))) == (None, 0)


def test_admission_splits_a_request_into_prompt_groups():
    from mlx_interp.gateway.admission import Admission
    from mlx_interp.gateway.events import Job
    from mlx_interp.gateway.protocol import CHAT, ChoiceSpec, GenerationSpec

    choices = [ChoiceSpec(p * 3 + i, (p + 1, p + 2), ()) for p in range(4) for i in range(3)]
    job = Job(GenerationSpec(kind=CHAT, model="default", max_tokens=4, choices=choices), None, None)
    adm = Admission.of(job)
    assert [len(g.choices) for g in adm.groups] == [3, 3, 3, 3]
    assert adm.next_claim() is adm.groups[0] and not adm.finished


def test_budget_and_layer_spec_limits_name_themselves():
    from mlx_interp.gateway.validation import _check_budget

    limits = Limits(max_request_tokens=1000)
    _check_budget([[1] * 10] * 2, 4, 100, limits)  # 4 x 2 x 110 = 880
    with pytest.raises(BadRequest) as e:
        _check_budget([[1] * 10] * 2, 5, 100, limits)  # 1100
    assert e.value.param == "max_tokens" and "--max-request-tokens" in e.value.message and "1100" in e.value.message
    with pytest.raises(BadRequest) as e:
        steer_spec.parse_body([{"vector": "v", "layers": "1," * 600}], 1, Limits(max_layers_spec=100))
    assert "--max-layers-spec" in e.value.message
    for bad in ("1_000", "nan", "inf", "0x10", "1e", "1 000"):
        with pytest.raises(BadRequest):
            steer_spec.parse_header(f"v={bad}", Limits())
    assert steer_spec.parse_header("v=-1.5e1", Limits())[0].alpha == -15.0


def test_long_error_messages_are_cut():
    from mlx_interp.gateway.errors import MAX_MESSAGE_CHARS

    err = BadRequest("x" * 1_000_000)
    assert len(err.message) <= MAX_MESSAGE_CHARS and err.message.endswith("(1000000 chars)")
