"""The `mlx-interp` console script: one entry point, a subcommand per concept.

Each package registers its own subcommands (a `register(subparsers)` function
in its cli module) so this file only knows their names. Errors the user can fix
are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, each with register(subparsers); imported lazily so
# `mlx-interp chat` does not pay for loading mlx or the server.
COMMAND_MODULES = (
    "mlx_interp.gateway.cli",  # serve
    "mlx_interp.clients.chat_cli",  # chat
    "mlx_interp.steering.cli",  # vectors, capture, generate
    "mlx_interp.probes.cli",  # probes
    "mlx_interp.experiments.cli",  # experiment
    "mlx_interp.bench",  # bench
    "mlx_interp.deploy.cli",  # service
)


class UserError(Exception):
    """An error the user can fix; printed as one line with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="mlx-interp",
        description="Steer and monitor MLX language models: OpenAI-compatible server, vectors, probes, studies.",
    )
    parser.add_argument("--version", action="version", version=f"mlx-interp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part is not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, ValueError, PermissionError, ConnectionError) as exc:
        # ArtifactError, GGUFError and argument problems are ValueErrors with a readable message.
        print(f"mlx-interp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
