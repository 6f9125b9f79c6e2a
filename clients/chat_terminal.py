"""The terminal loop of `mlx-interp chat` (see chat_cli.py for its arguments)."""

from __future__ import annotations

import argparse
import shutil
import sys
import unicodedata
from typing import IO

from .chat import ChatSession, ProbeMeter, Reply
from .client import MlxInterpClient
from .errors import EXIT_SERVER, EXIT_UNREACHABLE, ServerError
from .extensions import ProbeRequest, parse_steer_text

PROMPT = "you> "
ERASE_TO_END = "\x1b[K"
DIM, RESET = "\x1b[2m", "\x1b[0m"


def display_width(text: str) -> int:
    """Terminal columns a string takes: wide (CJK, emoji) characters take two, combining marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or char in "\u200b\u200d\ufe0f":
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


class LiveLine:
    """Writes the streamed reply; on a terminal also keeps a probe meter after the last character.

    The meter is drawn only when it fits in what is left of the current line, so
    erasing it is a move left plus erase-to-end: nothing wraps, nothing scrolls.
    """

    def __init__(self, out: IO[str], meter: ProbeMeter | None):
        self.out = out
        self.meter = meter
        self.column = 0
        self.meter_width = 0

    def _erase_meter(self) -> None:
        if self.meter_width:
            self.out.write(f"\x1b[{self.meter_width}D{ERASE_TO_END}")
            self.meter_width = 0

    def write(self, text: str, scores: dict[str, float]) -> None:
        self._erase_meter()
        if text:
            self.out.write(text)
            tail = text.rsplit("\n", 1)
            self.column = display_width(tail[-1]) + (0 if len(tail) > 1 else self.column)
        if self.meter is not None and scores:
            meter, width = self.meter.live(scores)
            columns = shutil.get_terminal_size((80, 24)).columns
            self.column %= max(1, columns)
            if self.column + width < columns:
                self.out.write(meter)
                self.meter_width = width
        self.out.flush()

    def end(self) -> None:
        self._erase_meter()
        self.out.write("\n")
        self.out.flush()


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _read_lines(interactive: bool):
    """Input lines: with a prompt (and readline editing) on a terminal, plain lines otherwise."""
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\n")
        return
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    while True:
        try:
            yield input(PROMPT)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print("\n(Ctrl-D or /quit to leave)")


def main(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty() and not args.plain
    live = sys.stdout.isatty() and not args.plain
    try:
        steer = parse_steer_text(args.steer) if args.steer else []
        probes = [ProbeRequest(n.strip()).name for n in (args.probes or "").split(",") if n.strip()]
        if args.max_tokens is not None and args.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    except ValueError as exc:
        return _fail(str(exc), 2)

    client = MlxInterpClient(args.base_url, args.api_key)
    try:
        models = client.models()  # fails fast on a server that is down or a wrong key
    except ServerError as exc:
        return _fail(str(exc), exc.exit_code)
    model = args.model or (models[0] if models else None)
    if model is None:
        return _fail(f"the server at {client.base_url} lists no models", EXIT_SERVER)
    if model not in models:
        return _fail(f"the server has no model {model!r} (it has: {', '.join(models)})", EXIT_SERVER)

    options = {k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature),
                                 ("seed", args.seed)) if v is not None}
    session = ChatSession(client, model, system=args.system, steer=steer, probes=probes, request_options=options)
    try:
        if steer:
            session.check_known("vector", [s.vector for s in steer], client.vectors)
        if probes:
            session.check_known("probe", probes, client.probes)
    except ValueError as exc:
        return _fail(str(exc), EXIT_SERVER)
    meter = ProbeMeter(color=live) if live else None
    if interactive:
        print(f"mlx-interp chat: {model} at {client.base_url}; /help for commands, Ctrl-D to leave")
        if steer or probes:
            print(f"{session.steering_text()}; {session.probes_text()}")

    failures = 0
    for line in _read_lines(interactive):
        if not line.strip():
            continue
        if session.is_command(line):
            try:
                result = session.command(line)
            except ServerError as exc:
                failures += 1
                print(f"error: {exc}", file=sys.stderr)
                if exc.exit_code == EXIT_UNREACHABLE or exc.status == 401:
                    return exc.exit_code
                continue
            if result.error:
                failures += 1
                print(f"error: {result.output}", file=sys.stderr)
            elif result.output:
                print(result.output, flush=True)
            if result.quit:
                break
            continue

        reply = Reply()
        writer = LiveLine(sys.stdout, meter)
        events = session.send(line, reply)
        try:
            for delta, scores in events:
                writer.write(delta, scores)
        except KeyboardInterrupt:
            events.close()
            writer.write(" [interrupted]", {})
        except ServerError as exc:
            failures += 1
            if reply.text:
                writer.end()
            print(f"error: {exc}", file=sys.stderr)
            if exc.exit_code == EXIT_UNREACHABLE or exc.status == 401:
                return exc.exit_code
            continue
        writer.end()
        summary = (meter or ProbeMeter(color=False)).summary(reply) if session.probes else ""
        if summary:
            print(f"{DIM}{summary}{RESET}" if live else summary, flush=True)
    client.close()
    # a script learns from the exit status that some request failed; a person already saw it
    return EXIT_SERVER if failures and not interactive else 0
