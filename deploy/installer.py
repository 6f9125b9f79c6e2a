"""Install, uninstall and inspect the service; remembers what it wrote in a small manifest.

Uninstall removes exactly the files the manifest lists (and the folders install
created, when they are empty again), so nothing else in the user's folders is
touched; log files stay, since the service wrote them, not the installer.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

from . import launchd, systemd
from .plan import MakeDirectory, RemoveEmptyDirectory, RemoveFile, Step, WriteFile, execute
from .runner import CommandRunner
from .service import ServiceSpec, check_name

PLATFORM_ENV = "MLX_INTERP_SERVICE_PLATFORM"
PLATFORMS = ("macos", "linux")
MANIFEST_VERSION = 1
HEALTH_TIMEOUT_S = 2.0


def detect_platform(requested: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """--platform, else $MLX_INTERP_SERVICE_PLATFORM, else this machine's."""
    env = os.environ if env is None else env
    choice = requested or env.get(PLATFORM_ENV) or {"darwin": "macos", "linux": "linux"}.get(sys.platform)
    if choice not in PLATFORMS:
        raise ValueError(f"services are supported on macOS (launchd) and Linux (systemd), not {choice or sys.platform!r}; pass --platform macos|linux")
    return choice


def platform_for(name: str, log_to_files: bool = False):
    return launchd.LaunchdPlatform() if name == "macos" else systemd.SystemdPlatform(log_to_files=log_to_files)


@dataclass
class Manifest:
    """What an install wrote: the only things an uninstall removes."""

    name: str
    platform: str
    files: list[str]
    directories: list[str] = field(default_factory=list)  # created by install; removed when empty
    log_to_files: bool = False
    service: dict = field(default_factory=dict)  # the description, key left out
    version: int = MANIFEST_VERSION

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, allow_nan=False) + "\n").encode()

    @classmethod
    def load(cls, path: Path) -> "Manifest | None":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable service manifest ({exc}); remove it by hand") from None
        try:
            return cls(**{k: data[k] for k in ("name", "platform", "files")},
                       **{k: data[k] for k in ("directories", "log_to_files", "service", "version") if k in data})
        except (KeyError, TypeError):
            raise ValueError(f"{path}: not a service manifest; remove it by hand") from None


def _missing_directories(paths: list[Path], home: Path) -> list[Path]:
    """Folders (and their missing parents below home) that do not exist yet, parents first."""
    missing: set[Path] = set()
    for path in paths:
        d = path
        while d != home and d != d.parent and not d.exists():
            missing.add(d)
            d = d.parent
    return sorted(missing, key=lambda p: len(p.parts))


def plan_install(spec: ServiceSpec, platform_name: str, home: Path, *, log_to_files: bool = False) -> list[Step]:
    platform = platform_for(platform_name, log_to_files)
    manifest_path = platform.manifest_path(home, spec.name)
    previous = Manifest.load(manifest_path)
    if previous is not None and previous.platform != platform_name:
        raise ValueError(f"{spec.name} is installed for {previous.platform}; uninstall it first")
    files = platform.files(spec, home)
    wanted_dirs = [f.path.parent for f in files] + platform.directories(spec, home) + [manifest_path.parent]
    new_dirs = _missing_directories(wanted_dirs, home)
    created = list(dict.fromkeys([*(previous.directories if previous else []), *map(str, new_dirs)]))
    manifest = Manifest(name=spec.name, platform=platform_name, files=[str(f.path) for f in files],
                        directories=created, log_to_files=log_to_files, service=spec.public_summary())
    steps: list[Step] = [MakeDirectory(d) for d in new_dirs]
    steps += files
    written = set(manifest.files)
    # files an earlier install wrote that this one does not (e.g. the key file, key now removed)
    steps += [RemoveFile(Path(p)) for p in (previous.files if previous else []) if p not in written]
    content = manifest.to_bytes()
    steps.append(WriteFile(manifest_path, content, 0o644, content.decode()))
    steps += platform.start(spec, home, reinstall=previous is not None)
    return steps


def _owned_file(path: str, home: Path) -> Path | None:
    """A manifest entry we may delete: a plain file under home (a hand-edited manifest cannot aim elsewhere)."""
    p = Path(path)
    try:
        p.resolve().relative_to(home.resolve())
    except ValueError:
        return None
    return p if not p.is_dir() else None


def plan_uninstall(name: str, platform_name: str, home: Path) -> list[Step]:
    check_name(name)
    manifest_path = platform_for(platform_name).manifest_path(home, name)
    manifest = Manifest.load(manifest_path)
    if manifest is None:
        raise ValueError(f"no service {name!r} installed for {platform_name} (no manifest at {manifest_path})")
    platform = platform_for(manifest.platform, manifest.log_to_files)
    steps: list[Step] = list(platform.stop(name, home))
    for path in manifest.files:
        owned = _owned_file(path, home)
        if owned is not None:
            steps.append(RemoveFile(owned))
    steps.append(RemoveFile(manifest_path))
    for directory in sorted(manifest.directories, key=lambda p: -len(Path(p).parts)):
        if _owned_file(directory, home) is None and Path(directory).resolve() != home.resolve():
            steps.append(RemoveEmptyDirectory(Path(directory)))
    steps += platform.after_removal(name, home)
    return steps


def install(spec: ServiceSpec, platform_name: str, home: Path, runner: CommandRunner, *,
            log_to_files: bool = False, dry_run: bool = False) -> list[Step]:
    steps = plan_install(spec, platform_name, home, log_to_files=log_to_files)
    if not dry_run:
        execute(steps, runner)
    return steps


def uninstall(name: str, platform_name: str, home: Path, runner: CommandRunner, *, dry_run: bool = False) -> list[Step]:
    steps = plan_uninstall(name, platform_name, home)
    if not dry_run:
        execute(steps, runner)
    return steps


def installed(name: str, platform_name: str, home: Path) -> Manifest | None:
    check_name(name)
    return Manifest.load(platform_for(platform_name).manifest_path(home, name))


def health(url: str, timeout: float = HEALTH_TIMEOUT_S) -> str | None:
    """The server's /health answer, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:  # noqa: S310 - our own URL
            return response.read(200).decode("utf-8", "replace").strip()
    except (urllib.error.URLError, OSError, ValueError):
        return None

