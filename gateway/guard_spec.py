"""The `guard` body field (api.md section 4b): server-side rules on probe readings, checked and resolved.

    "guard": [{"probe": "sycophancy", "above": 0.9, "for_tokens": 3, "then": "stop"},
              {"probe": "sycophancy", "above": 0.7, "then": "steer", "steer": {"honesty": 1.0}},
              {"probe": "refusal", "above": 0.8, "then": "cap", "vector": "refusal", "max": 2.0}]

A rule holds at a token when its probe's score (at the probe's best layer) is at
or above `above` for that token and the `for_tokens - 1` before it (at or
above, like a probe result's `flagged`). A `prompt_last` probe has one reading,
the prompt's last token, so its rules are judged once, before generation. The
request's own rules come first and keep their indices; a preset's rules follow.
Everything a rule needs (its probe, its interventions per choice) is looked up
here, so the engine never sees a name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from mlx_interp.steering.interventions import Intervention

from . import steer_spec
from .errors import BadRequest
from .limits import Limits

RULE_KEYS = {"probe", "above", "for_tokens", "then", "steer", "vector", "max", "layers"}
ACTION_KEYS = {"stop": set(), "steer": {"steer"}, "cap": {"vector", "max", "layers"}}
PARAM = "guard"


class Action(str, Enum):
    STOP = "stop"  # end the choice, finish_reason "content_filter"
    STEER = "steer"  # add the rule's steering from the next token on (and keep it)
    CAP = "cap"  # cap a projection from the next token on, while the rule holds


class Position(str, Enum):
    """Where a probe is read (api.md section 4, probes.positions)."""

    PROMPT_LAST = "prompt_last"
    TOKEN = "token"
    ANSWER_END = "answer_end"


GUARDABLE = (Position.PROMPT_LAST, Position.TOKEN)


def probe_position(probe) -> Position:
    """Where the server reads `probe` (probes.positions: declared, legacy names mapped, none = every token)."""
    return Position(probe.position)


@dataclass(frozen=True)
class GuardRule:
    """One rule as one choice runs it: what to watch, and what it adds to that choice's steering."""

    index: int  # its place in the request (the request's rules, then the preset's)
    probe: object  # probes.probe.Probe
    above: float
    for_tokens: int
    action: Action
    interventions: tuple[Intervention, ...] = ()  # steer / cap: what the rule adds to the row

    @property
    def probe_name(self) -> str:
        return self.probe.name

    @property
    def position(self) -> Position:
        return probe_position(self.probe)


def _bad(message: str) -> BadRequest:
    return BadRequest(message, param=PARAM)


def _number(item: dict, key: str, where: str, *, integer=False):
    value = item.get(key)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise _bad(f"{where}.{key} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise _bad(f"{where}.{key} must be a finite number, got {value!r}")
    return value


def _rewrap(exc: BadRequest, where: str) -> BadRequest:
    """A steering error inside a rule, re-aimed at the rule: param "guard", message naming the rule."""
    message = exc.message
    message = f"{where}.{message}" if message.startswith("steer") else f"{where}.steer: {message}"
    return BadRequest(message, param=PARAM, code=exc.code)


def _one_rule(item, index: int, n: int, probes, vectors, limits: Limits) -> list[GuardRule]:
    """The rule at `index`, resolved once per choice (a steer alpha list gives each choice its own)."""
    where = f"guard[{index}]"
    if not isinstance(item, dict):
        raise _bad(f"{where} must be an object like {{\"probe\": NAME, \"above\": 0.9, \"then\": \"stop\"}}")
    unknown = sorted(set(item) - RULE_KEYS)
    if unknown:
        raise _bad(f"{where} has unknown field {unknown[0]!r}; allowed: {', '.join(sorted(RULE_KEYS))}")
    name = item.get("probe")
    if not isinstance(name, str):
        raise _bad(f"{where}.probe must be a probe name (string), got {name!r}")
    try:
        probe = probes.get(name)
    except KeyError:
        known = ", ".join(probes.names()[:20]) or "none loaded"
        raise BadRequest(f"{where}: unknown probe {name[:80]!r} (loaded: {known})", param=PARAM, code="unknown_probe") from None
    position = probe_position(probe)
    if position not in GUARDABLE:
        raise _bad(
            f"{where}: probe {name!r} is read at {position.value}, after the answer; a guard acts during"
            f" generation and needs a probe read at {' or '.join(p.value for p in GUARDABLE)}"
        )
    if "above" not in item:
        raise _bad(f"{where}.above is required: the probability in [0, 1] at or above which the rule holds")
    above = _number(item, "above", where)
    if not 0.0 <= above <= 1.0:
        raise _bad(f"{where}.above must be in [0, 1], got {above!r}")
    for_tokens = 1
    if item.get("for_tokens") is not None:
        for_tokens = _number(item, "for_tokens", where, integer=True)
        if not 1 <= for_tokens <= limits.max_guard_tokens:
            raise _bad(f"{where}.for_tokens must be in [1, {limits.max_guard_tokens}] (--max-guard-tokens), got {for_tokens!r}")
        if position is Position.PROMPT_LAST and for_tokens != 1:
            raise _bad(f"{where}.for_tokens must be 1 for probe {name!r}: it is read once, at the prompt's last token")
    then = item.get("then")
    try:
        action = Action(then)
    except ValueError:
        raise _bad(f"{where}.then must be one of {', '.join(a.value for a in Action)}; got {then!r}") from None
    foreign = sorted(set(item) & (set().union(*ACTION_KEYS.values()) - ACTION_KEYS[action.value]))
    if foreign:
        raise _bad(f"{where}.{foreign[0]} is not used with then: {action.value!r}")
    per_choice: list[tuple[Intervention, ...]] = [()] * n
    if action is Action.STEER:
        if item.get("steer") in (None, {}, []):
            raise _bad(f"{where}: then 'steer' needs steer, e.g. {{\"honesty\": 1.0}}")
        try:
            entries = steer_spec.parse_body(item["steer"], n, limits)
            per_choice = steer_spec.build_plan(entries, n, vectors, limits).per_choice
        except BadRequest as exc:
            raise _rewrap(exc, where) from None
    elif action is Action.CAP:
        per_choice = [(_cap(item, where, vectors, limits),)] * n
    return [GuardRule(index, probe, float(above), int(for_tokens), action, tuple(ivs)) for ivs in per_choice]


def _cap(item: dict, where: str, vectors, limits: Limits) -> Intervention:
    name = item.get("vector")
    if not isinstance(name, str):
        raise _bad(f"{where}: then 'cap' needs vector, the name of the direction to cap, got {name!r}")
    try:
        vector = vectors.get(name)
    except KeyError:
        known = ", ".join(vectors.names()[:20]) or "none loaded"
        raise BadRequest(f"{where}: unknown steering vector {name[:80]!r} (loaded: {known})", param=PARAM, code="unknown_vector") from None
    if "max" not in item:
        raise _bad(f"{where}: then 'cap' needs max, the largest projection on {name!r} allowed")
    bound = _number(item, "max", where)
    if abs(bound) > limits.max_clamp_value:
        raise _bad(f"{where}: |max| must be at most {limits.max_clamp_value:g} (--max-clamp-value), got {bound!r}")
    layers = item.get("layers")
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, (str, list, int))):
        raise _bad(f"{where}.layers must be a list of ints, a range like '8-16' or 'all'")
    try:
        return vector.intervention(alpha=1.0, op="cap", layers=layers, value=float(bound))
    except ValueError as exc:
        raise _bad(f"{where}: {exc}") from None


def parse(body_value, preset_value, n: int, probes, vectors, limits: Limits) -> list[tuple[GuardRule, ...]]:
    """The rules of each of n choices (index i: choice i of each prompt); [()] * n without a guard."""
    items = []
    for source, value in (("guard", body_value), ("preset guard", preset_value)):
        if value is None:
            continue
        if not isinstance(value, list):
            raise _bad(f"{source} must be a list of rules like [{{\"probe\": NAME, \"above\": 0.9, \"then\": \"stop\"}}]")
        items.extend(value)
    if len(items) > limits.max_guard_rules:
        raise _bad(f"guard has {len(items)} rules; the limit is {limits.max_guard_rules} (--max-guard-rules)")
    per_choice: list[list[GuardRule]] = [[] for _ in range(n)]
    for index, item in enumerate(items):
        for i, rule in enumerate(_one_rule(item, index, n, probes, vectors, limits)):
            per_choice[i].append(rule)
    return [tuple(rules) for rules in per_choice]
