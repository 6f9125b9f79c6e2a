"""Runs the platform's service tools (launchctl, systemctl, journalctl, tail).

Each tool can be replaced through an environment variable, e.g.
MLX_INTERP_SYSTEMCTL=/path/to/recorder, so the real CLI can be tested (or
pointed at a wrapper) without touching the machine's service manager. Code can
also pass its own runner object to the installer.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Mapping

# tool -> the variable that replaces it
TOOL_OVERRIDES = {
    "launchctl": "MLX_INTERP_LAUNCHCTL",
    "systemctl": "MLX_INTERP_SYSTEMCTL",
    "journalctl": "MLX_INTERP_JOURNALCTL",
    "tail": "MLX_INTERP_TAIL",
}
# enough of a failing tool's message to explain it on one line
MAX_MESSAGE_CHARS = 300


class CommandError(Exception):
    """A service tool is missing or failed; str() is one line."""


class CommandRunner:
    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env

    def resolve(self, argv: list[str]) -> list[str]:
        override = self.env.get(TOOL_OVERRIDES.get(argv[0], ""), "")
        return [*shlex.split(override), *argv[1:]] if override else list(argv)

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """Run quietly; on failure (when check) raise CommandError with the tool's own message."""
        resolved = self.resolve(argv)
        try:
            done = subprocess.run(resolved, capture_output=True, text=True)
        except FileNotFoundError:
            raise CommandError(f"{resolved[0]} not found; is this the right platform (see --platform)?") from None
        if check and done.returncode != 0:
            message = " ".join((done.stderr or done.stdout or "").split())[:MAX_MESSAGE_CHARS]
            raise CommandError(f"`{shlex.join(argv)}` failed with exit status {done.returncode}: {message or 'no message'}")
        return done

    def passthrough(self, argv: list[str]) -> int:
        """Run with the terminal attached (status, logs): the user reads the tool's own output."""
        resolved = self.resolve(argv)
        try:
            return subprocess.run(resolved).returncode
        except FileNotFoundError:
            raise CommandError(f"{resolved[0]} not found; is this the right platform (see --platform)?") from None
