"""An interactive chat session against a running server: history, steering, probes, commands.

`ChatSession` holds the state and turns input lines into actions; it knows
nothing about terminals. `ProbeMeter` draws the live per-token scores. The
terminal loop lives in chat_cli.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .errors import ServerError
from .extensions import ProbeRequest, Steer, parse_steer_text, steer_json
from .readers import chunk_text, probe_scores

HELP = """commands:
  /steer NAME ALPHA [, NAME ALPHA ...]   steer every following reply (also NAME=ALPHA)
  /steer off                             stop steering
  /steer                                 show the steering in use
  /probes NAME [NAME ...]                show these probes' scores per token
  /probes off                            stop showing probes
  /probes                                show the probes in use
  /vectors, /probes list                 what the server has loaded
  /reset                                 forget the conversation (keeps steering and probes)
  /history                               print the conversation
  /help                                  this text
  /quit                                  leave (also Ctrl-D)"""

BAR_LEVELS = "▁▂▃▄▅▆▇█"
METER_NAME_CHARS = 10


@dataclass
class Reply:
    """A finished (or interrupted) reply: its text and each probe's per-token scores."""

    text: str = ""
    per_token: dict[str, list[float]] = field(default_factory=dict)
    aggregates: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


@dataclass
class CommandResult:
    output: str = ""
    quit: bool = False
    error: bool = False


def bar(score: float) -> str:
    """One block character whose height is the score (0..1)."""
    if score is None or not math.isfinite(score):
        return "?"
    level = min(len(BAR_LEVELS) - 1, max(0, int(score * len(BAR_LEVELS))))
    return BAR_LEVELS[level]


class ProbeMeter:
    """Formats the scores of the latest token: `sycophancy ▆ 0.81  emotion ▂ 0.20`."""

    def __init__(self, color: bool):
        self.color = color

    def _paint(self, text: str, score: float) -> str:
        if not self.color:
            return text
        code = "31" if score >= 0.8 else "33" if score >= 0.5 else "32"
        return f"\x1b[{code}m{text}\x1b[0m"

    def live(self, scores: dict[str, float]) -> tuple[str, int]:
        """The meter text and its width on screen (colour codes take no columns)."""
        parts, width = [], 0
        for name, score in scores.items():
            plain = f"{name[:METER_NAME_CHARS]} {bar(score)} {score:.2f}"
            parts.append(self._paint(plain, score))
            width += len(plain) + 2
        text = "  ".join(parts)
        return f"  [{text}]", width + 2

    def summary(self, reply: Reply) -> str:
        """One line after the reply: mean and max of each probe over the reply's tokens."""
        parts = []
        for name, scores in reply.per_token.items():
            values = [s for s in scores if s is not None]
            aggregate = reply.aggregates.get(name) or {}
            flagged = " FLAGGED" if aggregate.get("flagged") else ""
            if values:
                mean = sum(values) / len(values)
                spark = "".join(bar(v) for v in values[-40:]) if self.color else ""
                spark = f" {spark}" if spark else ""
                parts.append(f"{name} mean {mean:.2f} max {max(values):.2f}{spark}{flagged}")
            elif aggregate.get("score") is not None:
                parts.append(f"{name} {float(aggregate['score']):.2f}{flagged}")
        return "[probes] " + "; ".join(parts) if parts else ""


class ChatSession:
    """The conversation, the steering and probes in use, and the commands that change them."""

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        system: str | None = None,
        steer: list[Steer] | None = None,
        probes: list[str] | None = None,
        request_options: dict | None = None,
    ):
        self.client = client
        self.model = model
        self.system = system
        self.steer: list[Steer] = list(steer or [])
        self.probes: list[str] = list(probes or [])
        self.request_options = dict(request_options or {})
        self.messages: list[dict] = []
        self.reset()

    # --- commands --------------------------------------------------------------------------

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def steering_text(self) -> str:
        if not self.steer:
            return "steering: off"
        return "steering: " + ", ".join(f"{s.vector}={s.alpha:g}" for s in self.steer)

    def probes_text(self) -> str:
        return "probes: " + (", ".join(self.probes) if self.probes else "off")

    def history_text(self) -> str:
        if not self.messages:
            return "(no messages yet)"
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)

    def command(self, line: str) -> CommandResult:
        """Run a /command; the caller checks `is_command` first."""
        name, _, rest = line.strip()[1:].partition(" ")
        name, rest = name.lower(), rest.strip()
        try:
            handler: Callable[[str], CommandResult] = getattr(self, f"_cmd_{name}")
        except AttributeError:
            return CommandResult(f"unknown command /{name}; /help lists them", error=True)
        try:
            return handler(rest)
        except ValueError as exc:
            return CommandResult(f"{exc}", error=True)

    @staticmethod
    def is_command(line: str) -> bool:
        return line.strip().startswith("/")

    def _cmd_steer(self, rest: str) -> CommandResult:
        if not rest:
            return CommandResult(self.steering_text())
        if rest.lower() in ("off", "none", "clear"):
            self.steer = []
            return CommandResult(self.steering_text())
        new = parse_steer_text(rest)
        self.check_known("vector", [s.vector for s in new], self.client.vectors)
        by_name = {s.vector: s for s in self.steer}
        by_name.update({s.vector: s for s in new})
        self.steer = [s for s in by_name.values() if not (isinstance(s.alpha, float) and s.alpha == 0.0)]
        return CommandResult(self.steering_text())

    def _cmd_probes(self, rest: str) -> CommandResult:
        if not rest:
            return CommandResult(self.probes_text())
        if rest.lower() in ("off", "none", "clear"):
            self.probes = []
            return CommandResult(self.probes_text())
        if rest.lower() == "list":
            return CommandResult(_listing("probes", self.client.probes()))
        names = [ProbeRequest(n).name for n in dict.fromkeys(rest.replace(",", " ").split())]
        self.check_known("probe", names, self.client.probes)
        self.probes = names
        return CommandResult(self.probes_text())

    @staticmethod
    def check_known(kind: str, names: list[str], listing: Callable[[], list[dict]]) -> None:
        """Refuse a name the server does not have now, rather than at the next message."""
        try:
            known = {item.get("name") for item in listing()}
        except ServerError:
            return  # cannot tell; the server will say so when the message is sent
        unknown = [n for n in names if n not in known]
        if unknown:
            have = ", ".join(sorted(n for n in known if n)) or "none"
            raise ValueError(f"the server has no {kind} {unknown[0]!r} (it has: {have})")

    def _cmd_vectors(self, rest: str) -> CommandResult:
        return CommandResult(_listing("vectors", self.client.vectors()))

    def _cmd_reset(self, rest: str) -> CommandResult:
        self.reset()
        return CommandResult("conversation cleared")

    def _cmd_history(self, rest: str) -> CommandResult:
        return CommandResult(self.history_text())

    def _cmd_help(self, rest: str) -> CommandResult:
        return CommandResult(HELP)

    def _cmd_quit(self, rest: str) -> CommandResult:
        return CommandResult(quit=True)

    _cmd_exit = _cmd_quit

    # --- turns -----------------------------------------------------------------------------

    def _extra_body(self) -> dict:
        body: dict = {}
        if self.steer:
            body["steer"] = steer_json(self.steer)
        if self.probes:
            live = self._read_per_token()
            body["probes"] = {name: ({"per_token": True} if name in live else {}) for name in self.probes}
        return body

    def _read_per_token(self) -> set[str]:
        """The chosen probes the server reads per token (trained at `token`); others give one score per reply.

        Asking a prompt_last or answer_end probe for per-token scores is a 400,
        so the server's listing decides; it is fetched once per choice of probes.
        """
        key = tuple(self.probes)
        cached = getattr(self, "_per_token_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            positions = {item.get("name"): item.get("position", "token") for item in self.client.probes()}
        except ServerError:
            positions = {}
        live = {n for n in self.probes if positions.get(n, "token") == "token"}
        self._per_token_cache = (key, live)
        return live

    def send(self, text: str, reply: Reply) -> Iterator[tuple[str, dict[str, float]]]:
        """Send a user message; yields (text delta, this token's scores) while filling `reply`.

        The exchange joins the history once the reply ends (also when it is
        interrupted, with what came so far); a failed request leaves no trace.
        """
        messages = self.messages + [{"role": "user", "content": text}]
        chunks = self.client.stream_chat(
            messages, model=self.model, extra_body=self._extra_body() or None, **self.request_options
        )
        finished = False
        try:
            for chunk in chunks:
                delta = chunk_text(chunk)
                scores: dict[str, float] = {}
                for name, result in probe_scores(chunk).items():
                    if result.is_aggregate:
                        reply.aggregates[name] = result.raw
                    elif result.score is not None:
                        scores[name] = result.score
                        reply.per_token.setdefault(name, []).append(result.score)
                reply.text += delta
                if delta or scores:
                    yield delta, scores
            finished = True
        except (KeyboardInterrupt, GeneratorExit):
            # Ctrl-C here, or the caller closed us after a Ctrl-C of its own: keep the partial reply
            reply.interrupted = finished = True
            raise
        finally:
            chunks.close()  # stops the server's generation if we leave early
            if finished:
                self._finish(messages, reply)

    def _finish(self, messages: list[dict], reply: Reply) -> None:
        if not reply.per_token:
            # a server that sends no live token scores still gives them in the aggregates
            for name, aggregate in reply.aggregates.items():
                values = aggregate.get("per_token") if isinstance(aggregate, dict) else None
                if isinstance(values, list):
                    reply.per_token[name] = [v for v in values if isinstance(v, (int, float))]
        self.messages = messages + [{"role": "assistant", "content": reply.text}]


def _listing(what: str, items: list[dict]) -> str:
    if not items:
        return f"the server has no {what} loaded"
    lines = []
    for item in items:
        name = item.get("name") or item.get("id") or "?"
        description = item.get("description") or ""
        lines.append(f"  {name}" + (f"  {description}" if description else ""))
    return f"{what}:\n" + "\n".join(lines)
