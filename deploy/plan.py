"""What an install or uninstall does, as a list of steps: printed for --dry-run, executed otherwise.

Keeping the steps as data means --dry-run shows exactly what a real run does,
and the tests can compare plans without touching the system.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from .runner import CommandRunner


@dataclass(frozen=True)
class MakeDirectory:
    path: Path

    def describe(self) -> str:
        return f"create directory {self.path}"


@dataclass(frozen=True)
class WriteFile:
    path: Path
    content: bytes
    mode: int
    shown: str  # the content as --dry-run prints it: secrets masked

    def describe(self) -> str:
        return f"write {self.path} (mode {self.mode:04o}):\n" + _indent(self.shown)


@dataclass(frozen=True)
class RemoveFile:
    path: Path

    def describe(self) -> str:
        return f"remove {self.path}"


@dataclass(frozen=True)
class RemoveEmptyDirectory:
    path: Path

    def describe(self) -> str:
        return f"remove directory {self.path} if empty"


@dataclass(frozen=True)
class RunCommand:
    argv: tuple[str, ...]
    # e.g. unloading a service that is not loaded: the end state is what we want anyway
    may_fail: bool = False

    def describe(self) -> str:
        suffix = "   (failure ignored)" if self.may_fail else ""
        return f"run {shlex.join(self.argv)}{suffix}"


Step = Union[MakeDirectory, WriteFile, RemoveFile, RemoveEmptyDirectory, RunCommand]


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.rstrip("\n").splitlines())


def describe(steps: list[Step]) -> str:
    return "\n".join(step.describe() for step in steps)


def write_private_file(path: Path, content: bytes, mode: int) -> None:
    """Replace `path` atomically; the file never exists with looser permissions than `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def execute(steps: list[Step], runner: CommandRunner) -> None:
    for step in steps:
        if isinstance(step, MakeDirectory):
            step.path.mkdir(parents=True, exist_ok=True)
        elif isinstance(step, WriteFile):
            write_private_file(step.path, step.content, step.mode)
        elif isinstance(step, RemoveFile):
            step.path.unlink(missing_ok=True)
        elif isinstance(step, RemoveEmptyDirectory):
            try:
                step.path.rmdir()
            except OSError:
                pass  # not empty (logs, other files) or already gone: leave it
        elif isinstance(step, RunCommand):
            runner.run(list(step.argv), check=not step.may_fail)
