"""`mlx-interp service install | uninstall | status | restart | logs`: the server as a background service.

macOS: a launchd LaunchAgent; Linux: a systemd user unit. --platform (or
$MLX_INTERP_SERVICE_PLATFORM) picks one explicitly, e.g. to see with --dry-run
what would be written on the other system.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .service import API_KEY_ENV, DEFAULT_HOST, DEFAULT_NAME, DEFAULT_PORT

DEFAULT_LOG_LINES = 100


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "service",
        help="run the server in the background (launchd on macOS, systemd on Linux)",
        description="Install the server as a per-user background service that starts at login and restarts after a crash.",
    )
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    sub = p.add_subparsers(dest="service_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--name", default=DEFAULT_NAME,
                       help="service name (default %(default)s: launchd label com.NAME.server, systemd unit NAME.service)")
        q.add_argument("--platform", choices=("macos", "linux"), default=None,
                       help="launchd or systemd files regardless of this machine (default: this machine's)")

    q = sub.add_parser("install", help="write the service files and start the service",
                       description="Write the service files, then start the service (again, with new settings, if installed).")
    common(q)
    q.add_argument("--model", default="default", help="what `mlx-interp serve --model` gets (default: %(default)s)")
    q.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default %(default)s; any other needs --api-key)")
    q.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    q.add_argument("--api-key", default=None,
                   help=f"key clients must send; '-' reads it from stdin (default: ${API_KEY_ENV} if set). Stored readable only by you")
    q.add_argument("--vectors", action="append", default=[], metavar="DIR", help="steering vector library (repeatable)")
    q.add_argument("--probes", action="append", default=[], metavar="DIR", help="probe library (repeatable)")
    q.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment variable for the server, e.g. MLX_INTERP_CACHE=/data/models (repeatable)")
    q.add_argument("--ranks", type=int, default=1, metavar="N", help="run the model across N processes on this machine (serve --ranks)")
    q.add_argument("--hostfile", metavar="FILE", help="run the model across the machines of an mlx host file; this machine runs rank 0 (serve --hostfile)")
    q.add_argument("--parallel", choices=("auto", "pipeline", "tensor"), default="auto", help="how --ranks/--hostfile split the model (serve --parallel)")
    q.add_argument("--log-files", action="store_true",
                   help="Linux: write logs to ~/.local/state/NAME/server.log instead of the journal")
    q.add_argument("--dry-run", action="store_true", help="print the files and commands, change nothing")
    q.set_defaults(func=run_install)

    q = sub.add_parser("uninstall", help="stop the service and remove the files install wrote")
    common(q)
    q.add_argument("--dry-run", action="store_true", help="print what would be removed and run, change nothing")
    q.set_defaults(func=run_uninstall)

    q = sub.add_parser("status", help="what is installed, what the service manager says, whether the server answers")
    common(q)
    q.set_defaults(func=run_status)

    q = sub.add_parser("restart", help="restart the service (e.g. after upgrading mlx-interp)")
    common(q)
    q.set_defaults(func=run_restart)

    q = sub.add_parser("logs", help="show the server's log")
    common(q)
    q.add_argument("-n", "--lines", type=int, default=DEFAULT_LOG_LINES, help="how many lines (default %(default)s)")
    q.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    q.set_defaults(func=run_logs)


# --- handlers: every failure is one line on stderr and a non-zero status --------------------------


def _guarded(handler):
    def run(args: argparse.Namespace) -> int:
        from .runner import CommandError

        try:
            return handler(args)
        except (ValueError, OSError, CommandError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _home() -> Path:
    return Path.home()


def _existing_directory(flag: str, value: str) -> str:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(f"{flag} {value}: not a directory")
    return str(path.resolve())  # the service does not run in this folder


def _model_value(value: str) -> str:
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value  # a local path, else 'default' or a repo id


def _api_key(value: str | None) -> str | None:
    if value == "-":
        key = sys.stdin.readline().strip()
        if not key:
            raise ValueError("--api-key -: no key on stdin")
        return key
    return value or os.environ.get(API_KEY_ENV) or None


def _environment(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--env {pair!r}: expected KEY=VALUE")
        out.append((key, value))
    return tuple(out)


def _spec(args: argparse.Namespace):
    from .service import ServiceSpec

    return ServiceSpec(
        name=args.name,
        python=sys.executable,
        model=_model_value(args.model),
        host=args.host,
        port=args.port,
        api_key=_api_key(args.api_key),
        vectors=tuple(_existing_directory("--vectors", d) for d in args.vectors),
        probes=tuple(_existing_directory("--probes", d) for d in args.probes),
        extra_environment=_environment(args.env),
        working_directory=str(_home()),
        ranks=args.ranks,
        hostfile=str(Path(args.hostfile).expanduser().resolve()) if args.hostfile else None,
        parallel=args.parallel,
    )


@_guarded
def run_install(args: argparse.Namespace) -> int:
    from .installer import detect_platform, install, platform_for
    from .plan import describe
    from .runner import CommandRunner

    platform_name = detect_platform(args.platform)
    spec = _spec(args)
    home = _home()
    steps = install(spec, platform_name, home, CommandRunner(), log_to_files=args.log_files, dry_run=args.dry_run)
    if args.dry_run:
        print(f"# dry run: nothing written, nothing run ({platform_name})")
        print(describe(steps))
        return 0
    platform = platform_for(platform_name, args.log_files)
    label = spec.launchd_label if platform_name == "macos" else spec.systemd_unit
    print(f"installed and started {label} ({platform_name}): {spec.description}")
    print(f"  url:    {spec.url}/v1" + ("  (API key required)" if spec.api_key else ""))
    print(f"  logs:   {platform.log_location(spec.name, home)}")
    print("  check:  mlx-interp service status" + (f" --name {spec.name}" if spec.name != "mlx-interp" else ""))
    if platform_name == "linux":
        print("  to keep it running while you are logged out: loginctl enable-linger $USER")
    return 0


@_guarded
def run_uninstall(args: argparse.Namespace) -> int:
    from .installer import detect_platform, uninstall
    from .plan import describe
    from .runner import CommandRunner

    steps = uninstall(args.name, detect_platform(args.platform), _home(), CommandRunner(), dry_run=args.dry_run)
    if args.dry_run:
        print("# dry run: nothing removed, nothing run")
        print(describe(steps))
    else:
        print(f"uninstalled {args.name}; its log files were left in place")
    return 0


@_guarded
def run_status(args: argparse.Namespace) -> int:
    from .installer import detect_platform, health, installed, platform_for
    from .runner import CommandRunner

    platform_name = detect_platform(args.platform)
    manifest = installed(args.name, platform_name, _home())
    if manifest is None:
        print(f"{args.name}: not installed (mlx-interp service install)")
        return 3
    service = manifest.service
    print(f"{args.name}: installed for {manifest.platform}; model {service.get('model')} at {service.get('url')}")
    for path in manifest.files:
        print(f"  file: {path}")
    platform = platform_for(manifest.platform, manifest.log_to_files)
    sys.stdout.flush()
    CommandRunner().passthrough(platform.status_command(args.name))
    answer = health(service.get("url", "")) if service.get("url") else None
    if answer is None:
        print(f"server: not answering at {service.get('url')}/health")
        return 3
    print(f"server: answering at {service.get('url')}/health: {answer}")
    return 0


@_guarded
def run_restart(args: argparse.Namespace) -> int:
    from .installer import detect_platform, installed, platform_for
    from .runner import CommandRunner

    platform_name = detect_platform(args.platform)
    manifest = installed(args.name, platform_name, _home())
    if manifest is None:
        raise ValueError(f"no service {args.name!r} installed for {platform_name}; run mlx-interp service install")
    CommandRunner().run(platform_for(manifest.platform, manifest.log_to_files).restart_command(args.name))
    print(f"restarted {args.name}")
    return 0


@_guarded
def run_logs(args: argparse.Namespace) -> int:
    from .installer import detect_platform, installed, platform_for
    from .runner import CommandRunner

    if args.lines < 1:
        raise ValueError(f"--lines must be at least 1, got {args.lines}")
    platform_name = detect_platform(args.platform)
    home = _home()
    manifest = installed(args.name, platform_name, home)
    platform = platform_for(manifest.platform if manifest else platform_name, bool(manifest and manifest.log_to_files))
    argv = platform.logs_command(args.name, home, args.lines, args.follow)
    if argv[0] == "tail":
        files = [a for a in argv[1:] if a.startswith("/")]
        if not any(Path(f).exists() for f in files):
            raise ValueError(f"no log files yet at {platform.log_location(args.name, home)}")
        argv = [argv[0], *[a for a in argv[1:] if not a.startswith("/") or Path(a).exists()]]
    return CommandRunner().passthrough(argv)
