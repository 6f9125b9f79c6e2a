"""`mlx-interp chat`: talk to a running server from the terminal, with steering and live probes.

On a terminal: a prompt, the reply as it streams, and a meter with the latest
token's probe scores at the end of the line. Otherwise (stdin is a pipe or a
file): one message per input line, replies printed plainly, so it can be scripted.
Only argparse is imported here; the client (and `openai`) load when the command runs.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "chat",
        help="interactive chat with a running server (steering, live probe scores)",
        description="Chat with a running mlx-interp server. Type /help in the chat for its commands.",
    )
    p.add_argument("--base-url", default=os.environ.get("MLX_INTERP_BASE_URL", DEFAULT_BASE_URL),
                   help="the server's OpenAI base URL (default: %(default)s; env MLX_INTERP_BASE_URL)")
    p.add_argument("--api-key", default=None, help="the server's API key (default: env MLX_INTERP_API_KEY)")
    p.add_argument("--model", default=None, help="model id (default: the first one the server lists)")
    p.add_argument("--system", default=None, help="a system message to start the conversation with")
    p.add_argument("--steer", default=None, metavar="NAME=ALPHA[,...]", help="steering to start with, e.g. green_red=1.5")
    p.add_argument("--probes", default=None, metavar="NAME[,...]", help="probes to show from the start, e.g. sycophancy")
    p.add_argument("--max-tokens", type=int, default=None, help="longest reply, in tokens")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--plain", action="store_true", help="no prompt, colours or live meter even on a terminal")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .chat_terminal import main

    return main(args)
