"""What the model thread tells the event loop about a request, and the request it runs.

The model thread never touches asyncio objects directly: each decode step it
posts a list of events per request with loop.call_soon_threadsafe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import APIError
from .protocol import GenerationSpec


@dataclass
class PromptRead:
    index: int
    reading: np.ndarray | None  # (P, L) at the last prompt token
    token_readings: list  # (P, L) per prompt token, when echo asked for them
    cached_tokens: int = 0


@dataclass
class TokenOut:
    index: int
    token: int
    text: str  # text safe to show now (stop strings held back)
    token_text: str  # the token alone, for logprobs
    logprob: float | None
    top: list  # [(token_text, logprob)]
    reading: np.ndarray | None  # (P, L)
    guard: list | None = None  # guard rules that fired on this token (api.md section 4b)


@dataclass
class ChoiceEnd:
    index: int
    finish_reason: str
    completion_tokens: int
    text: str = ""  # the last text held back, if any
    guard: list | None = None  # guard rules that fired and ended the choice before a token was sent


@dataclass
class Failed:
    error: APIError


class Job:
    """One request: its spec, and where its events go. `cancelled` is set by the event loop."""

    def __init__(self, spec: GenerationSpec, loop, events):
        self.spec = spec
        self.loop = loop
        self.events = events  # asyncio.Queue, filled with lists of events
        self.cancelled = False
        self.open_choices = len(spec.choices)

    def post(self, items: list) -> None:
        if items:
            try:
                self.loop.call_soon_threadsafe(self.events.put_nowait, items)
            except RuntimeError:  # the loop closed (server shutting down)
                self.cancelled = True
