"""Run `mlx-interp chat` as a real process: through a pipe, or inside a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMPT = b"you> "


def chat_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_INTERP_")}
    env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "160", "LINES": "40", "TERM": "xterm"})
    env.update(extra)
    return env


def chat_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlx_interp.cli", "chat", *args]


def run_chat_piped(args: list[str], stdin: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(chat_command(*args), input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=str(ROOT), env=chat_env(**env))


class PtyChat:
    """The chat inside a pseudo-terminal: send lines, read until the next prompt."""

    def __init__(self, args: list[str], **env: str):
        self.master, slave = pty.openpty()
        self._set_size(slave, rows=40, cols=160)
        self.proc = subprocess.Popen(chat_command(*args), stdin=slave, stdout=slave, stderr=slave,
                                     cwd=str(ROOT), env=chat_env(**env), close_fds=True)
        os.close(slave)
        self.transcript = b""

    @staticmethod
    def _set_size(fd: int, rows: int, cols: int) -> None:
        import fcntl
        import struct
        import termios

        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, marker: bytes, timeout: float = 120) -> bytes:
        """Output up to and including the next `marker` (raises on timeout or exit)."""
        start = len(self.transcript)
        deadline = time.monotonic() + timeout
        while marker not in self.transcript[start:]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {marker!r} in {self.transcript[start:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(remaining, 0.5))
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    data = b""
                if not data:
                    raise EOFError(f"chat exited before {marker!r}: {self.transcript[start:]!r}")
                self.transcript += data
        end = self.transcript.index(marker, start) + len(marker)
        return self.transcript[start:end]

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def exchange(self, line: str, timeout: float = 120) -> bytes:
        """Send a line and return everything printed until the next prompt."""
        self.send(line)
        return self.read_until(PROMPT, timeout)

    def close(self, timeout: float = 30) -> int:
        try:
            self.send("/quit")
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)
