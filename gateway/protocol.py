"""Typed requests as the engine sees them, and responses and stream chunks in OpenAI's shape.

Extension fields (api.md sections 3-4): top-level "steering" and per-choice
"probes". Everything else follows OpenAI's published schema.

The bottom layer of the gateway: the parsers (validation, steer_spec,
probe_spec) and the sampler build these shapes, so this module imports none of
them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlx_interp.steering.interventions import Intervention

if TYPE_CHECKING:
    from mlx_interp.probes.probe import Probe

CHAT = "chat"
TEXT = "text"


# Below this, temperature and top_p both mean "the most likely token": 1/temperature would overflow
# float32 (1e-40 -> inf, NaN logits) and top_p would round to 0 in float32 (1e-300 -> index out of range).
GREEDY_BELOW = 1e-6


@dataclass(frozen=True)
class SamplingParams:
    """One choice's sampling settings (gateway/sampling.py turns them into a RowSampler)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW or self.top_p < GREEDY_BELOW


@dataclass(frozen=True)
class ProbeRequest:
    """One probe a request reads (gateway/probe_spec.py parses the `probes` field into these)."""

    probe: Probe
    per_token: bool = False
    threshold: float | None = None  # None: the probe's own

    @property
    def name(self) -> str:
        return self.probe.name

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else self.probe.threshold


@dataclass(frozen=True)
class ChoiceSpec:
    index: int
    prompt: tuple[int, ...]
    interventions: tuple[Intervention, ...] = ()
    guard: tuple = ()  # guard_spec.GuardRule for this choice


@dataclass
class GenerationSpec:
    kind: str  # CHAT or TEXT
    model: str  # the id echoed in responses (the one the client named)
    choices: list[ChoiceSpec]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    probes: tuple[ProbeRequest, ...] = ()
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    prompt_texts: list[str] = field(default_factory=list)  # per choice, for echo
    steering_applied: list[dict] = field(default_factory=list)
    grammar: object = None  # constraints.Grammar every choice's tokens must follow
    output: object = None  # tools.ToolOutput: how the text becomes tool calls (chat with tools)
    guard_probes: tuple[ProbeRequest, ...] = ()  # probes only guards read (not reported)

    @property
    def probes_read(self) -> tuple[ProbeRequest, ...]:
        """Every probe the rows read: the requested ones (reported), then the ones only guards need."""
        return self.probes + self.guard_probes

    @property
    def prompt_tokens(self) -> int:
        """Usage counts each distinct prompt once, however many choices share it."""
        seen = {}
        for c in self.choices:
            seen[c.prompt] = len(c.prompt)
        return sum(seen.values())


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == CHAT else "cmpl-") + secrets.token_hex(12)


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprob_entry(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    return {
        "token": token,
        "logprob": logprob,
        "bytes": token_bytes(token),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": token_bytes(t)} for t, lp in top],
    }


def text_logprobs(entries: list[tuple[str, float, list[tuple[str, float]]]], offset0: int = 0, want_top: bool = True) -> dict:
    """The legacy completions logprobs object from (token, logprob, top) triples."""
    offsets, pos = [], offset0
    for tok, _, _ in entries:
        offsets.append(pos)
        pos += len(tok)
    out = {
        "tokens": [t for t, _, _ in entries],
        "token_logprobs": [lp for _, lp, _ in entries],
        "text_offset": offsets,
    }
    # an echoed prompt's first token has no log-probability and no alternatives: null, as OpenAI sends
    out["top_logprobs"] = [None if top is None else {t: lp for t, lp in top} for _, _, top in entries] if want_top else []
    return out


def steering_field(spec: GenerationSpec) -> dict:
    return {"applied": spec.steering_applied}


def completion_response(spec: GenerationSpec, rid: str, created: int, choices: list[dict], completion_tokens: int) -> dict:
    return {
        "id": rid,
        "object": "chat.completion" if spec.kind == CHAT else "text_completion",
        "created": created,
        "model": spec.model,
        "system_fingerprint": "mlx-interp",
        "choices": choices,
        "usage": usage(spec.prompt_tokens, completion_tokens),
        "steering": steering_field(spec),
    }


def chunk(spec: GenerationSpec, rid: str, created: int, choices: list[dict], **extra) -> dict:
    return {
        "id": rid,
        "object": "chat.completion.chunk" if spec.kind == CHAT else "text_completion",
        "created": created,
        "model": spec.model,
        "system_fingerprint": "mlx-interp",
        "choices": choices,
        **extra,
    }


def model_object(model_id: str, created: int, owned_by: str = "mlx-interp", **extra) -> dict:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, **extra}
