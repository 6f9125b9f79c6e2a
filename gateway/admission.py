"""What the engine admits: rows, not requests, and prompts a chunk at a time.

A request is split into prompt groups: its choices that share a prompt and the
prompt-phase steering (one prefill serves them all). Each batch slot is either
a row decoding or a prompt being prefilled, so rows plus prefills never exceed
the batch limit, whatever one request asks: a request with more rows than room
gets them as slots free, the rest waiting.

Fairness: a free slot goes to the request holding the fewest slots, the oldest
first on ties, so a small request is never starved by a big one that came first.

A prefill runs one chunk per engine iteration, round-robin over the prompts in
flight, so decode steps run between the chunks of a long prompt and a short
prompt that arrives behind it overtakes it.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from .events import Job
from .prompt_cache import prompt_key

_arrival = itertools.count()  # the order requests reached the model thread, for fair ties


@dataclass(eq=False)
class PromptGroup:
    """Choices of one request that share a prompt and its prompt-phase steering."""

    tokens: tuple[int, ...]
    steer_key: tuple
    choices: deque  # ChoiceSpec not yet in the batch
    task: object = None  # steering.generation.PrefillTask while prefilling
    pre: object = None  # steering.generation.Prefill once read, until its last choice joins the batch
    cached_tokens: int = 0
    reading: object = None  # (P, L) probe reading at the last prompt token, for guards' prompt rules

    @property
    def started(self) -> bool:
        return self.task is not None or self.pre is not None

    @property
    def ready(self) -> bool:
        """Prefilled, with choices still waiting for a slot."""
        return self.pre is not None and bool(self.choices)


@dataclass(eq=False)
class Admission:
    """A request on its way into the batch."""

    job: Job
    groups: list[PromptGroup]
    order: int = field(default_factory=lambda: next(_arrival))

    @classmethod
    def of(cls, job: Job) -> "Admission":
        groups: dict[tuple, PromptGroup] = {}
        for c in job.spec.choices:
            key = (c.prompt, prompt_key(c.interventions))
            if key not in groups:
                groups[key] = PromptGroup(c.prompt, key[1], deque())
            groups[key].choices.append(c)
        return cls(job, list(groups.values()))

    @property
    def prefilling(self) -> int:
        return sum(1 for g in self.groups if g.task is not None)

    def next_claim(self) -> PromptGroup | None:
        """The group a new slot would go to: a prefilled one with choices left, else one not started."""
        for g in self.groups:
            if g.ready:
                return g
        for g in self.groups:
            if not g.started and g.choices:
                return g
        return None

    @property
    def finished(self) -> bool:
        return all(not g.choices and g.task is None for g in self.groups)

