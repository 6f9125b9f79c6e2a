"""Guards at run time: each guarded row judges its rules on its own probe readings, inside the decode loop.

Timing (api.md section 4b). A token's reading is the residual stream after
the model has read that token, so it comes out of the decode step that feeds
the token. The engine launches step s+1 before it turns step s into events.
A row with `steer` or `cap` rules on a token probe (`RowGuard.steers`) is
judged before that launch instead (`judge_before_step`), so that a rule that
starts to hold at token t changes the steering of the forward pass that feeds
token t+1: the tokens sampled from then on are steered. That costs such
batches the overlap of step s+1's graph construction with step s. A row whose
rules only stop is judged when its token is sent (`RowState.advance`): the
step already launched for it is wasted, nothing else. Either way token t,
whose reading fired the rule, is sent, and after a stop nothing after it is.

A `prompt_last` probe has one reading, the prompt's last token, judged when
the row is admitted. A `steer` or `cap` it triggers applies to the whole
generation, as if the request had asked for that steering (conditional
steering): the prompt is run again under it (through the prompt cache), so
the first generated token is steered too. The reading the rule judged, and the
one the response reports as prompt_score, is the unsteered prompt's.

Only the guarded row's own interventions change (DecodeBatch.set_interventions
rebuilds the per-row terms): its batch neighbours compute exactly what they
computed before.
"""

from __future__ import annotations

import math

import numpy as np

from .guard_spec import Action, GuardRule, Position


class RowGuard:
    """One choice's rules, their runs of readings at or above the threshold, and what they switched on."""

    def __init__(self, rules: tuple[GuardRule, ...], base_interventions: tuple, probe_names: tuple[str, ...]):
        self.rules = rules
        self.base = tuple(base_interventions)
        self._cols = [probe_names.index(r.probe_name) for r in rules]
        self._runs = [0] * len(rules)
        self._holding = [False] * len(rules)
        self._on = [False] * len(rules)  # steer: latched once fired; cap: while the rule holds
        self._fired: list[dict] = []
        self.stopped = False
        # rules that change the row's steering per token must be judged before the next step launches
        self.steers = any(r.action is not Action.STOP and r.position is Position.TOKEN for r in rules)

    # -- judging --------------------------------------------------------------------------------
    def judge_prompt(self, reading: np.ndarray | None) -> bool:
        """The prompt's reading (P, L) against the prompt_last rules; True when the steering changed."""
        if reading is None:
            return False
        return self._judge(None, reading, Position.PROMPT_LAST)

    def judge_token(self, token_index: int, reading: np.ndarray) -> bool:
        """A generated token's reading (P, L) against the token rules; True when the steering changed."""
        return self._judge(token_index, reading, Position.TOKEN)

    def _judge(self, token_index: int | None, reading: np.ndarray, position: Position) -> bool:
        changed = False
        for k, rule in enumerate(self.rules):
            if rule.position is not position or self.stopped:
                continue
            score = float(reading[self._cols[k], rule.probe.best_layer])
            if math.isfinite(score) and score >= rule.above:
                self._runs[k] += 1
            else:
                self._runs[k] = 0
            holds = self._runs[k] >= rule.for_tokens
            started = holds and not self._holding[k]
            self._holding[k] = holds
            changed |= self._act(k, rule, holds, started, token_index, score)
        return changed

    def _act(self, k: int, rule: GuardRule, holds: bool, started: bool, token_index, score: float) -> bool:
        record = {"rule": rule.index, "token_index": token_index, "score": round(score, 6), "action": rule.action.value}
        if rule.action is Action.STOP:
            if started:
                self._fired.append(record)
                self.stopped = True
            return False
        if rule.action is Action.STEER:
            if started and not self._on[k]:  # once on, it stays on: a second firing changes nothing
                self._fired.append(record)
                self._on[k] = True
                return True
            return False
        # cap: on while the rule holds, off when it stops holding
        if started:
            self._fired.append(record)
        if holds != self._on[k]:
            self._on[k] = holds
            return True
        return False

    # -- what it means for the row ----------------------------------------------------------------
    def interventions(self) -> tuple:
        """The row's own steering, then what the rules that are on add (in rule order)."""
        added = tuple(iv for k, rule in enumerate(self.rules) if self._on[k] for iv in rule.interventions)
        return self.base + added

    def take_fired(self) -> list[dict] | None:
        """Records of rules that fired since the last call (None when none did)."""
        if not self._fired:
            return None
        fired, self._fired = self._fired, []
        return fired


def judge_before_step(parts, batch) -> None:
    """Judge the guarded rows' readings in `parts` (the step just computed) before the next step launches.

    A row whose steering changes gets it in the batch now; a row a stop rule
    ended is marked by its guard and finished when its token is sent.
    """
    for part in parts:
        if part.scores is None or not any(r.guard is not None and r.guard.steers for r in part.rows):
            continue
        scores = part.host_scores()
        for i, row in enumerate(part.rows):
            guard = row.guard
            if guard is None or not guard.steers or row.done or row.held is None or row.job.cancelled or guard.stopped:
                continue
            reading = scores[i][:, row.columns(part.bank)].T  # (P, L), in row.probe_names order
            if guard.judge_token(row.generated - 1, reading):
                batch.set_interventions(row, guard.interventions())


def rerun_prompt(batch, tokens, interventions, prompt_cache):
    """The prompt again under `interventions` (through the prompt cache, like any prompt)."""
    from .prompt_cache import prompt_key

    key = prompt_key(interventions)
    cache, cached = prompt_cache.lookup(key, tokens)
    pre = batch.prefill(list(tokens), interventions, cache=cache, cached_tokens=cached)
    prompt_cache.store(key, tokens, pre.cache)
    return pre
