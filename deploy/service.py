"""The one description of the background service; launchd and systemd files are renderings of it."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlx_interp.gateway.auth import is_loopback  # the same rule the server applies when it starts
from mlx_interp.gateway.limits import ENV_PREFIX, Limits

DEFAULT_NAME = "mlx-interp"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# seconds between a crash and the restart (launchd ThrottleInterval, systemd RestartSec)
RESTART_DELAY_S = 10
# seconds the service manager waits after SIGTERM before SIGKILL: the server's drain time
# (--drain-s, MLX_INTERP_DRAIN_S) plus this margin for cancelling, stopping the model thread and exiting
STOP_MARGIN_S = 15
STOP_TIMEOUT_S = int(Limits().drain_s) + STOP_MARGIN_S
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
API_KEY_ENV = "MLX_INTERP_API_KEY"
# --env variables whose names say they hold a secret (HF_TOKEN, ...) are stored like the API key
SECRET_NAME_PATTERN = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME_PATTERN.search(name))


def launchd_label(name: str) -> str:
    return f"com.{name}.server"


def systemd_unit(name: str) -> str:
    return f"{name}.service"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(f"service name {name!r} is not allowed; use 1-40 characters from [a-z0-9-], starting with a letter or digit")
    return name


def _check_value(what: str, value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} contains a control character (newline, tab, ...); the service files cannot hold it")
    return value


@dataclass(frozen=True)
class ServiceSpec:
    """What runs, with which settings, and what it is called; no platform details.

    `api_key` (and any extra variable named like a secret, e.g. HF_TOKEN) is
    kept apart from `environment` so each renderer can store it where only the
    user can read it.
    """

    name: str = DEFAULT_NAME
    python: str = field(default_factory=lambda: sys.executable)
    model: str = "default"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    vectors: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    extra_environment: tuple[tuple[str, str], ...] = ()
    working_directory: str = field(default_factory=lambda: str(Path.home()))
    ranks: int = 1  # serve --ranks: processes on this machine
    hostfile: str | None = None  # serve --hostfile: this machine runs rank 0
    parallel: str = "auto"  # serve --parallel

    @property
    def stop_timeout_s(self) -> int:
        """STOP_TIMEOUT_S, or the drain time given with --env MLX_INTERP_DRAIN_S plus the margin."""
        for key, value in self.extra_environment:
            if key == ENV_PREFIX + "DRAIN_S":
                try:
                    return int(float(value)) + STOP_MARGIN_S
                except ValueError:
                    raise ValueError(f"--env {key} must be a number of seconds, got {value!r}") from None
        return STOP_TIMEOUT_S

    def __post_init__(self):
        check_name(self.name)
        if not (isinstance(self.port, int) and 1 <= self.port <= 65535):
            raise ValueError(f"--port must be between 1 and 65535, got {self.port!r}")
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(f"refusing to serve on {self.host} without an API key; pass --api-key (the server refuses it too)")
        if not Path(self.python).is_absolute():
            raise ValueError(f"the interpreter must be an absolute path, got {self.python!r}")
        for what, value in [("--model", self.model), ("--host", self.host), ("--api-key", self.api_key or ""),
                            *[("--vectors", v) for v in self.vectors], *[("--probes", p) for p in self.probes],
                            *[(f"--env {k}", v) for k, v in self.extra_environment]]:
            _check_value(what, value)
        if not (isinstance(self.ranks, int) and self.ranks >= 1):
            raise ValueError(f"--ranks must be a positive number, got {self.ranks!r}")
        if self.hostfile is not None and not Path(self.hostfile).is_absolute():
            raise ValueError(f"--hostfile must be an absolute path, got {self.hostfile!r}")
        if self.parallel not in ("auto", "pipeline", "tensor"):
            raise ValueError(f"--parallel must be auto, pipeline or tensor, got {self.parallel!r}")
        for key, _ in self.extra_environment:
            if not ENV_NAME_PATTERN.match(key):
                raise ValueError(f"--env {key!r}: not a valid environment variable name")
            if key == API_KEY_ENV:
                raise ValueError(f"pass the key with --api-key, not --env {API_KEY_ENV}, so it is stored privately")

    # --- what every renderer needs ---------------------------------------------------------

    @property
    def launchd_label(self) -> str:
        return launchd_label(self.name)

    @property
    def systemd_unit(self) -> str:
        return systemd_unit(self.name)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def description(self) -> str:
        return f"mlx-interp server ({self.model} on {self.host}:{self.port})"

    def program_arguments(self) -> list[str]:
        """The server's command line; settings are explicit arguments so the unit says what runs."""
        args = [self.python, "-m", "mlx_interp.cli", "serve", "--model", self.model,
                "--host", self.host, "--port", str(self.port)]
        for directory in self.vectors:
            args += ["--vectors", directory]
        for directory in self.probes:
            args += ["--probes", directory]
        if self.hostfile:
            args += ["--hostfile", self.hostfile]
        elif self.ranks > 1:
            args += ["--ranks", str(self.ranks)]
        if (self.hostfile or self.ranks > 1) and self.parallel != "auto":
            args += ["--parallel", self.parallel]
        return args

    def environment(self) -> dict[str, str]:
        """Variables that are not secret (the key is in `secrets()`)."""
        # Model, host and port are on the command line (program_arguments); nothing reads
        # them from the environment, so the unit does not repeat them there.
        env = {
            "PYTHONUNBUFFERED": "1",  # log lines reach the log as they happen
        }
        env.update({k: v for k, v in self.extra_environment if not is_secret_name(k)})
        return env

    def secrets(self) -> dict[str, str]:
        """The API key and any --env variable named like a secret: only the user may read where they go."""
        secrets = {API_KEY_ENV: self.api_key} if self.api_key else {}
        secrets.update({k: v for k, v in self.extra_environment if is_secret_name(k)})
        return secrets

    def public_summary(self) -> dict:
        """The description without the key, for the manifest and for `status`."""
        return {
            "name": self.name, "python": self.python, "model": self.model, "host": self.host, "port": self.port,
            "api_key": "set" if self.api_key else None, "vectors": list(self.vectors), "probes": list(self.probes),
            "ranks": self.ranks, "hostfile": self.hostfile, "parallel": self.parallel,
            "environment": {k: "set" if is_secret_name(k) else v for k, v in self.extra_environment}, "url": self.url,
        }
