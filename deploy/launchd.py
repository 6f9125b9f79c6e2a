"""macOS: the service as a launchd LaunchAgent of the logged-in user.

~/Library/LaunchAgents/<label>.plist, loaded with `launchctl bootstrap gui/<uid>`;
output goes to ~/Library/Logs/<name>/server.log and server.err.log.
"""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

from .plan import RunCommand, Step, WriteFile
from .service import RESTART_DELAY_S, ServiceSpec, launchd_label

PLATFORM = "macos"
LAUNCHCTL = "launchctl"
MASK = "********"


def plist_path(home: Path, name: str) -> Path:
    return home / "Library" / "LaunchAgents" / f"{launchd_label(name)}.plist"


def log_dir(home: Path, name: str) -> Path:
    return home / "Library" / "Logs" / name


def log_files(home: Path, name: str) -> list[Path]:
    return [log_dir(home, name) / "server.log", log_dir(home, name) / "server.err.log"]


def manifest_path(home: Path, name: str) -> Path:
    return home / "Library" / "Application Support" / name / "service-manifest.json"


def domain() -> str:
    return f"gui/{os.getuid()}"


def service_target(name: str) -> str:
    return f"{domain()}/{launchd_label(name)}"


def plist_dict(spec: ServiceSpec, home: Path, *, mask_secrets: bool = False) -> dict:
    stdout, stderr = log_files(home, spec.name)
    environment = spec.environment()
    environment.update({k: MASK if mask_secrets else v for k, v in spec.secrets().items()})
    return {
        "Label": spec.launchd_label,
        "ProgramArguments": spec.program_arguments(),
        "WorkingDirectory": spec.working_directory,
        "EnvironmentVariables": environment,
        "RunAtLoad": True,
        # restart after a crash, not after a clean stop (systemd: Restart=on-failure)
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_DELAY_S,
        "ExitTimeOut": spec.stop_timeout_s,
        "StandardOutPath": str(stdout),
        "StandardErrorPath": str(stderr),
    }


def render_plist(spec: ServiceSpec, home: Path, *, mask_secrets: bool = False) -> bytes:
    return plistlib.dumps(plist_dict(spec, home, mask_secrets=mask_secrets), fmt=plistlib.FMT_XML, sort_keys=False)


class LaunchdPlatform:
    name = PLATFORM

    def manifest_path(self, home: Path, name: str) -> Path:
        return manifest_path(home, name)

    def files(self, spec: ServiceSpec, home: Path) -> list[WriteFile]:
        # the key lives in the plist's environment, so then only the user may read the plist
        mode = 0o600 if spec.secrets() else 0o644
        content = render_plist(spec, home)
        shown = render_plist(spec, home, mask_secrets=True).decode()
        return [WriteFile(plist_path(home, spec.name), content, mode, shown)]

    def directories(self, spec: ServiceSpec, home: Path) -> list[Path]:
        # launchd opens the log files but does not create their folder
        return [log_dir(home, spec.name)]

    def start(self, spec: ServiceSpec, home: Path, reinstall: bool) -> list[Step]:
        # unload whatever runs under this label first (an earlier install, or one loaded by hand):
        # bootstrap refuses a label that is already loaded
        steps: list[Step] = [RunCommand((LAUNCHCTL, "bootout", service_target(spec.name)), may_fail=True)]
        steps += [
            # a service once disabled (launchctl disable) refuses to bootstrap until enabled again
            RunCommand((LAUNCHCTL, "enable", service_target(spec.name))),
            RunCommand((LAUNCHCTL, "bootstrap", domain(), str(plist_path(home, spec.name)))),
        ]
        return steps

    def stop(self, name: str, home: Path) -> list[Step]:
        return [RunCommand((LAUNCHCTL, "bootout", service_target(name)), may_fail=True)]

    def after_removal(self, name: str, home: Path) -> list[Step]:
        return []

    def status_command(self, name: str) -> list[str]:
        return [LAUNCHCTL, "print", service_target(name)]

    def restart_command(self, name: str) -> list[str]:
        return [LAUNCHCTL, "kickstart", "-k", service_target(name)]

    def logs_command(self, name: str, home: Path, lines: int, follow: bool) -> list[str]:
        files = [str(p) for p in log_files(home, name)]
        return ["tail", "-n", str(lines), *(["-F"] if follow else []), *files]

    def log_location(self, name: str, home: Path) -> str:
        return str(log_dir(home, name))

