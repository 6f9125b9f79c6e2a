"""lm-eval against the server: the shipped task files, and a small run whose scores are checked by hand.

The run uses the tiny llama model (fast on 2 cores): lm-eval's local-completions
scores every choice through the server's echo + logprobs, and each of those
log-likelihoods must equal the one a forward pass in this process gives.
"""

import json

import numpy as np
import pytest
from mlx_interp.experiments import capability
from mlx_interp.experiments.colour_swap import COLOUR_PATTERN
from mlx_interp.experiments.common import read_jsonl

import lm_eval  # noqa: E402  (installed with the test extra; a missing one is an error, not a skip)


def test_task_files_are_well_formed_and_colour_free():
    mc, qa = read_jsonl(capability.MC_DATA), read_jsonl(capability.QA_DATA)
    assert len(mc) == 40 and len(qa) == 30
    for row in mc:
        assert len(row["choices"]) == 4 and 0 <= row["answer"] < 4 and len(set(row["choices"])) == 4
    for row in qa:
        assert row["answer"].isalpha()  # one word: the task scores the first word of the answer
    assert [r["answer"] for r in mc].count(0) == 10  # the correct choice is spread over the four positions
    text = json.dumps(mc) + json.dumps(qa) + capability.QA_DESCRIPTION
    assert not COLOUR_PATTERN.search(text)  # a colour steer's cost is measured on questions that never name a colour


def test_task_configs_load_in_lm_eval():
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(capability.task_configs(), TaskManager(include_defaults=False))
    mc, qa = tasks[capability.MC_TASK], tasks[capability.QA_TASK]
    docs = list(mc.test_docs())
    assert len(docs) == 40 and len(list(qa.test_docs())) == 30
    assert mc.doc_to_text(docs[0]) == "Question: What is the capital of France?\nAnswer:"
    assert mc.doc_to_choice(docs[0]) == ["Paris", "Berlin", "Madrid", "Rome"] and mc.doc_to_target(docs[0]) == 0


def _loglikelihood(lm, tokenizer, context: str, continuation: str) -> float:
    """What lm-eval asks for: log P(continuation | context), the context tokenized alone."""
    import mlx.core as mx

    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    logits = lm.model(mx.array([whole]))[0].astype(mx.float32)
    lp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    return float(sum(lp[t - 1, whole[t]] for t in range(len(ctx), len(whole))))


@pytest.mark.server
def test_lm_eval_runs_plain_and_steered_against_the_server(tiny_model_dirs, tiny_llama, tmp_path):
    import sys
    from pathlib import Path

    from transformers import AutoTokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
    from gateway_helpers import make_vector

    make_vector(tiny_llama, "push", tmp_path / "vectors", seed=1, layers=(1, 2), alpha=8.0)
    samples = {}
    config = capability.CapabilityConfig(steer={"push": 8.0}, limit=3, batch_size=4)
    result = capability.run(str(tiny_model_dirs["llama"]), tmp_path / "out", config, vectors=tmp_path / "vectors", samples=samples)

    written = json.loads((tmp_path / "out" / "capability.json").read_text())
    assert written["plain"] == result["plain"] and [a["vector"] for a in written["steering_applied"]] == ["push"]
    for run in ("plain", "steered"):
        assert set(result[run]) == {capability.MC_TASK, capability.QA_TASK}
        assert len(samples[run][capability.MC_TASK]) == 3 and len(samples[run][capability.QA_TASK]) == 3

    # every choice's score lm-eval got from the server is the in-process log-likelihood of that choice
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dirs["llama"]))
    correct = 0
    for s in samples["plain"][capability.MC_TASK]:
        doc = s["doc"]
        context = f"Question: {doc['question']}\nAnswer:"
        want = [_loglikelihood(tiny_llama, tokenizer, context, " " + c) for c in doc["choices"]]
        got = [r[0] for r in s["filtered_resps"]]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
        correct += int(np.argmax(want) == doc["answer"])
    assert result["plain"][capability.MC_TASK]["acc"]["value"] == pytest.approx(correct / 3)
    # the preset's steer reached the scores
    steered = [r[0] for s in samples["steered"][capability.MC_TASK] for r in s["filtered_resps"]]
    plain = [r[0] for s in samples["plain"][capability.MC_TASK] for r in s["filtered_resps"]]
    assert np.max(np.abs(np.array(steered) - np.array(plain))) > 1e-2
