"""Linux: the service as a systemd user unit.

~/.config/systemd/user/<name>.service, started with `systemctl --user enable --now`.
The API key goes into ~/.config/<name>/service.env (mode 0600), read through
EnvironmentFile=, so the unit itself stays world-readable like any unit.
Output goes to the journal (`journalctl --user -u <name>`), or with
log_files=True to ~/.local/state/<name>/server.log.
"""

from __future__ import annotations

from pathlib import Path

from .plan import RunCommand, Step, WriteFile
from .service import RESTART_DELAY_S, ServiceSpec, systemd_unit

PLATFORM = "linux"
SYSTEMCTL = "systemctl"
JOURNALCTL = "journalctl"
MASK = "********"


def unit_path(home: Path, name: str) -> Path:
    return home / ".config" / "systemd" / "user" / systemd_unit(name)


def env_file_path(home: Path, name: str) -> Path:
    return home / ".config" / name / "service.env"


def state_dir(home: Path, name: str) -> Path:
    return home / ".local" / "state" / name


def log_files(home: Path, name: str) -> list[Path]:
    return [state_dir(home, name) / "server.log"]


def manifest_path(home: Path, name: str) -> Path:
    return state_dir(home, name) / "service-manifest.json"


def quote(value: str) -> str:
    """One word of an ExecStart= or Environment= line, quoted the way systemd unquotes it."""
    escaped = value.replace("%", "%%")  # specifiers
    if escaped and not any(c in escaped for c in ' \t"\'\\$;'):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return f'"{escaped}"'


def path_value(path: str | Path) -> str:
    """A path setting (WorkingDirectory=, EnvironmentFile=): taken literally but for % specifiers."""
    return str(path).replace("%", "%%")


def render_env_file(secrets: dict[str, str], *, mask: bool = False) -> str:
    lines = ["# Secrets for the mlx-interp service; only its owner may read this file."]
    for key, value in secrets.items():
        shown = MASK if mask else value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{shown}"')
    return "\n".join(lines) + "\n"


def render_unit(spec: ServiceSpec, home: Path, *, log_to_files: bool = False) -> str:
    exec_start = " ".join(quote(arg) for arg in spec.program_arguments())
    lines = [
        "# Written by `mlx-interp service install`; `mlx-interp service uninstall` removes it.",
        "[Unit]",
        f"Description={spec.description}",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        f"WorkingDirectory={path_value(spec.working_directory)}",
    ]
    lines += [f"Environment={quote(f'{k}={v}')}" for k, v in spec.environment().items()]
    if spec.secrets():
        lines.append(f"EnvironmentFile={path_value(env_file_path(home, spec.name))}")
    lines += [
        "Restart=on-failure",
        f"RestartSec={RESTART_DELAY_S}",
        f"TimeoutStopSec={spec.stop_timeout_s}",
    ]
    if spec.ranks > 1 or spec.hostfile:
        # SIGTERM to the launcher alone: it stops rank 0, which drains, then stops the other ranks
        # (SIGTERM to every rank at once would fail the requests rank 0 is draining).
        lines.append("KillMode=mixed")
    if log_to_files:
        (log,) = log_files(home, spec.name)
        lines += [f"StandardOutput=append:{path_value(log)}", f"StandardError=append:{path_value(log)}"]
    else:
        lines += ["StandardOutput=journal", "StandardError=journal", f"SyslogIdentifier={spec.name}"]
    lines += ["", "[Install]", "WantedBy=default.target", ""]
    return "\n".join(lines)


class SystemdPlatform:
    name = PLATFORM

    def __init__(self, log_to_files: bool = False):
        self.log_to_files = log_to_files

    def manifest_path(self, home: Path, name: str) -> Path:
        return manifest_path(home, name)

    def files(self, spec: ServiceSpec, home: Path) -> list[WriteFile]:
        unit = render_unit(spec, home, log_to_files=self.log_to_files)
        files = [WriteFile(unit_path(home, spec.name), unit.encode(), 0o644, unit)]
        if spec.secrets():
            env = render_env_file(spec.secrets())
            files.append(WriteFile(env_file_path(home, spec.name), env.encode(), 0o600,
                                   render_env_file(spec.secrets(), mask=True)))
        return files

    def directories(self, spec: ServiceSpec, home: Path) -> list[Path]:
        return [state_dir(home, spec.name)] if self.log_to_files else []

    def start(self, spec: ServiceSpec, home: Path, reinstall: bool) -> list[Step]:
        unit = spec.systemd_unit
        steps: list[Step] = [
            RunCommand((SYSTEMCTL, "--user", "daemon-reload")),
            RunCommand((SYSTEMCTL, "--user", "enable", "--now", unit)),
        ]
        if reinstall:  # enable --now leaves a running service on its old settings
            steps.append(RunCommand((SYSTEMCTL, "--user", "restart", unit)))
        return steps

    def stop(self, name: str, home: Path) -> list[Step]:
        return [RunCommand((SYSTEMCTL, "--user", "disable", "--now", systemd_unit(name)), may_fail=True)]

    def after_removal(self, name: str, home: Path) -> list[Step]:
        return [RunCommand((SYSTEMCTL, "--user", "daemon-reload"))]

    def status_command(self, name: str) -> list[str]:
        return [SYSTEMCTL, "--user", "status", "--no-pager", systemd_unit(name)]

    def restart_command(self, name: str) -> list[str]:
        return [SYSTEMCTL, "--user", "restart", systemd_unit(name)]

    def logs_command(self, name: str, home: Path, lines: int, follow: bool) -> list[str]:
        if self.log_to_files:
            return ["tail", "-n", str(lines), *(["-F"] if follow else []), *map(str, log_files(home, name))]
        return [JOURNALCTL, "--user", "-u", systemd_unit(name), "-n", str(lines), "--no-pager", *(["-f"] if follow else [])]

    def log_location(self, name: str, home: Path) -> str:
        if self.log_to_files:
            return str(log_files(home, name)[0])
        return f"the journal: journalctl --user -u {systemd_unit(name)}"
