"""Probes read where they were trained: positions, token-level training, response aggregates."""

import numpy as np
import pytest

from mlx_interp.probes.aggregation import aggregate, ema_trace
from mlx_interp.probes.positions import ANSWER_END, PROMPT_LAST, TOKEN, capture_at, declared_position, example_spans
from mlx_interp.probes.training import train_probe


def test_spans_split_prompt_and_answer_as_generation_sees_them(tiny_llama):
    decode = tiny_llama.tokenizer.decode
    spans = example_spans(tiny_llama, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo!"}]})
    assert decode(spans.tokens[: spans.answer_start]).endswith("<|im_start|>assistant\n")
    assert decode(spans.tokens[spans.answer_start:]) == "yo!"  # no end-of-turn: generation stops before feeding it
    assert spans.indices(PROMPT_LAST) == [spans.answer_start - 1]
    assert spans.indices(ANSWER_END) == [len(spans.tokens) - 1]
    assert spans.indices(TOKEN) == list(range(spans.answer_start, len(spans.tokens)))
    open_turn = example_spans(tiny_llama, {"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(ValueError, match="needs an answer"):
        open_turn.indices(TOKEN)


def test_legacy_and_undeclared_positions(make_probe):
    assert declared_position({"position": "last"}) == ANSWER_END
    assert declared_position({"position": "mean"}) == TOKEN
    assert declared_position({}) == TOKEN  # hand-built probes were always read per token
    assert make_probe(position="prompt_last").position == PROMPT_LAST and not make_probe(position="prompt_last").per_token
    with pytest.raises(ValueError, match="position"):
        declared_position({"position": "middle"})


def test_ema_aggregate_is_the_peak_of_the_moving_average():
    x = np.array([0.0, 1.0, 1.0, 0.0])
    trace = ema_trace(x, window=3)  # alpha 0.5
    assert trace.tolist() == [0.0, 0.5, 0.75, 0.375]
    assert aggregate(x, "ema", 3) == 0.75 and aggregate(x, "max") == 1.0 and aggregate(x, "mean") == 0.5
    spike, plateau = np.array([0, 0, 1, 0, 0.0]), np.array([0, 0.6, 0.6, 0.6, 0])
    assert aggregate(spike, "max") > aggregate(plateau, "max")
    assert aggregate(spike, "ema", 4) < aggregate(plateau, "ema", 4)  # a sustained stretch outweighs one spike


def _planted_rows(n_items: int, seed: int = 0):
    """Answers of random letters; positive ones carry a marker letter at three places mid-answer, none near the end."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(n_items):
        letters = list(rng.choice(list("abcdefgh"), size=20))
        if i % 2:
            for k in rng.choice(range(2, 14), size=3, replace=False):
                letters[k] = "Z"
        answer = "".join(letters) + " the end."  # every answer ends the same way
        rows.append({"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": answer}]})
        labels.append(i % 2)
    return rows, np.array(labels)


def test_token_probe_recovers_a_planted_per_token_signal_that_answer_end_misses(tiny_llama):
    rows, y = _planted_rows(48)
    spans = [example_spans(tiny_llama, r) for r in rows]

    X_tok, owner = capture_at(tiny_llama, spans, TOKEN)
    assert len(owner) == sum(len(s.tokens) - s.answer_start for s in spans)  # every answer token, nothing else
    token_probe = train_probe(X_tok, y[owner], owner.tolist(), "planted", position=TOKEN, sequences=owner.tolist(),
                              aggregation="max", n_shuffles=0, n_bootstrap=200)
    X_end, owner_end = capture_at(tiny_llama, spans, ANSWER_END)
    assert owner_end.tolist() == list(range(len(rows)))
    end_probe = train_probe(X_end, y, list(range(len(rows))), "planted_end", position=ANSWER_END,
                            n_shuffles=0, n_bootstrap=200)

    tok_meta, end_meta = token_probe.metadata, end_probe.metadata
    # held-out (nested CV) response-level AUROC: the max over a response's tokens finds the marker ...
    assert tok_meta["aggregate_auroc"]["max"] >= 0.85
    # ... which the state at the answer's identical end does not carry
    assert end_meta["auroc"] <= 0.7
    # thresholds: one per token, one per response aggregate; `threshold` belongs to the declared aggregate
    assert tok_meta["threshold"] == tok_meta["aggregate_thresholds"]["max"]
    assert 0.0 <= tok_meta["token_threshold"] <= 1.0 and tok_meta["n_responses"] == len(rows)
    assert token_probe.position == TOKEN and end_probe.position == ANSWER_END
    assert len(tok_meta["selection"]["layers_chosen_per_fold"]) == tok_meta["folds"]


def test_calibration_softens_overconfident_scores_and_never_sharpens():
    from mlx_interp.probes.training import PLATT_MAX_SLOPE, _logit, _sigmoid, platt_scaling

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=400)
    honest = _sigmoid(rng.normal(size=400) + (2 * y - 1))  # logit = truth + noise
    overconfident = _sigmoid(8 * _logit(honest))  # the same ranking, eight times too sure
    a, c = platt_scaling(overconfident, y)
    assert 0 < a < 0.5  # shrinks the logit back toward its honest scale
    calibrated = _sigmoid(a * _logit(overconfident) + c)
    assert np.mean((calibrated > 0.02) & (calibrated < 0.98)) > np.mean((overconfident > 0.02) & (overconfident < 0.98))
    separable = _sigmoid(0.2 * (2 * y - 1) + 0.01 * rng.normal(size=400))  # perfectly ranked, timid scores
    a, c = platt_scaling(separable, y)
    assert a == PLATT_MAX_SLOPE  # would sharpen to 0/1 if allowed: capped, offset refitted
    assert abs(np.mean(_sigmoid(a * _logit(separable) + c)) - np.mean(y)) < 0.02
