"""RowGuard alone: runs of readings, what each action switches on and off, what is reported."""

from types import SimpleNamespace

import numpy as np

from mlx_interp.gateway.guard_spec import Action, GuardRule
from mlx_interp.gateway.guards import RowGuard

LAYERS, BEST = 4, 2
BASE = ("own",)


def _probe(name, position="token"):
    return SimpleNamespace(name=name, best_layer=BEST, position=position)


def _reading(*scores):
    """(P, L) with each probe's score at its best layer, junk elsewhere."""
    r = np.full((len(scores), LAYERS), 0.5, np.float32)
    r[:, BEST] = scores
    return r


def test_stop_needs_a_run_of_for_tokens():
    guard = RowGuard((GuardRule(0, _probe("p"), 0.8, 3, Action.STOP),), BASE, ("p",))
    for t, s in enumerate([0.9, 0.9, 0.1, 0.9, 0.85]):
        assert guard.judge_token(t, _reading(s)) is False and not guard.stopped
    assert guard.take_fired() is None
    guard.judge_token(5, _reading(0.8))  # at the threshold counts, like `flagged`
    assert guard.stopped and guard.take_fired() == [{"rule": 0, "token_index": 5, "score": 0.8, "action": "stop"}]
    assert not guard.steers and guard.interventions() == BASE


def test_steer_latches_and_is_reported_once():
    rule = GuardRule(1, _probe("p"), 0.5, 1, Action.STEER, ("steer-iv",))
    guard = RowGuard((rule,), BASE, ("p",))
    assert guard.steers
    assert guard.judge_token(0, _reading(0.2)) is False
    assert guard.judge_token(1, _reading(0.7)) is True and guard.interventions() == BASE + ("steer-iv",)
    assert guard.judge_token(2, _reading(0.1)) is False and guard.interventions() == BASE + ("steer-iv",)
    assert guard.judge_token(3, _reading(0.9)) is False
    assert [f["token_index"] for f in guard.take_fired()] == [1]


def test_cap_holds_while_the_rule_holds():
    rule = GuardRule(0, _probe("p"), 0.5, 2, Action.CAP, ("cap-iv",))
    guard = RowGuard((rule,), BASE, ("p",))
    changes = [guard.judge_token(t, _reading(s)) for t, s in enumerate([0.6, 0.6, 0.7, 0.2, 0.6, 0.6])]
    assert changes == [False, True, False, True, False, True]
    assert guard.interventions() == BASE + ("cap-iv",)
    assert [f["token_index"] for f in guard.take_fired()] == [1, 5]  # each engagement


def test_rules_read_their_own_probe_column_and_position():
    rules = (GuardRule(0, _probe("a"), 0.5, 1, Action.STOP), GuardRule(1, _probe("b", "prompt_last"), 0.5, 1, Action.STEER, ("x",)))
    guard = RowGuard(rules, (), ("b", "a"))  # columns in the row's probe order
    assert not guard.steers  # the steer rule is judged on the prompt, once
    assert guard.judge_prompt(_reading(0.9, 0.1)) is True and guard.interventions() == ("x",)
    assert guard.take_fired() == [{"rule": 1, "token_index": None, "score": 0.9, "action": "steer"}]
    guard.judge_token(0, _reading(0.9, 0.1))  # b high, a low: the stop rule on a stays quiet
    assert not guard.stopped
    guard.judge_token(1, _reading(0.1, 0.6))
    assert guard.stopped and guard.take_fired()[0]["rule"] == 0


def test_nan_reading_breaks_a_run():
    guard = RowGuard((GuardRule(0, _probe("p"), 0.5, 2, Action.STOP),), (), ("p",))
    guard.judge_token(0, _reading(0.9))
    guard.judge_token(1, _reading(float("nan")))
    guard.judge_token(2, _reading(0.9))
    assert not guard.stopped
