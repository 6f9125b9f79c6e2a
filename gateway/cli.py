"""`mlx-interp serve`: load a model and its libraries, then serve the OpenAI-compatible API."""

from __future__ import annotations

import argparse
import os
import sys

from .limits import add_limit_arguments, limits_from

ENV_API_KEY = "MLX_INTERP_API_KEY"
ENV_ADMIN_KEY = "MLX_INTERP_ADMIN_KEY"
EXIT_MODEL_THREAD_DIED = 70  # EX_SOFTWARE: the service manager restarts the server
ENV_SWITCH_INTERVAL = "MLX_INTERP_SWITCH_INTERVAL"  # seconds; Python's GIL hand-over interval (5 ms by default)
END_GRACE_S = 5.0  # after --drain-s, the engine ends what is left; streams get this long to send their end


# The request the start-up line prints, and what the default model answered to it (temperature 0).
SERVE_EXAMPLE = """\
example: unsteered and steered side by side (n 2, one alpha per choice), default model:
  {"messages": [{"role": "user", "content": "What colour is fresh grass? Answer with one word."}],
   "max_tokens": 12, "temperature": 0, "n": 2, "steer": [{"vector": "green_red", "alpha": [0, 1.25]}]}
  choice 0: The colour of fresh grass is a mix of various colors,
  choice 1: The answer is: red.
  (alpha 1.25 is green_red's calibrated default; the design card's 1.5 answers
   "The answer will be: \u201cRed\u201d in the original sentence", with a warning: past the coherent range)

alpha (add) is the total shift across the steered layers in units of the vector's class-mean
difference; GET /v1/steering/vectors shows each vector's calibrated coherent range. See docs/steering.md."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the OpenAI-compatible API with steering and probes",
        description="Serve /v1/chat/completions and /v1/completions from one MLX model, with steering vectors and probes.",
        epilog=SERVE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="default", help="'default', an mlx-lm model directory, a Hugging Face repo id or a .gguf file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs --api-key)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--vectors", action="append", default=[], metavar="DIR", help="steering vector library (repeatable; the first takes uploads)")
    p.add_argument("--probes", action="append", default=[], metavar="DIR", help="probe library (repeatable; the first takes uploads)")
    p.add_argument("--presets", metavar="FILE", help="JSON file of presets: name -> {model, steer, probes}")
    p.add_argument("--api-key", help=f"key required on every route but /health (or ${ENV_API_KEY})")
    p.add_argument("--admin-key", help=f"key required to upload or delete vectors and probes (or ${ENV_ADMIN_KEY})")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="browser origin allowed to call the API (repeatable; none by default)")
    p.add_argument("--dtype", default=None, help="auto, float32, float16, bfloat16 or native (keep the checkpoint's)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level")
    g = p.add_argument_group("several processes (one model across ranks; see README 'Ranks')")
    g.add_argument("--ranks", type=int, default=1, metavar="N", help="run the model across N processes on this machine (mlx.launch, ring backend over loopback)")
    g.add_argument("--hostfile", metavar="FILE", help="run across the machines of an mlx host file (mlx.launch --hostfile); this machine runs rank 0")
    g.add_argument("--parallel", choices=("auto", "pipeline", "tensor"), default="auto",
                   help="how the model is split: tensor (mlx-lm's shard; needs heads divisible by the ranks) or pipeline (layer ranges); auto: tensor where it fits")
    g.add_argument("--ring-port", type=int, default=0, metavar="PORT", help="first port of the ring backend (default: a free one on loopback, mlx's 32323 with --hostfile)")
    g.add_argument("--rank-timeout", type=float, default=60.0, metavar="S", help="rank 0 fails every request and exits when the other ranks make no progress for S seconds (0: never)")
    g.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)  # set by the launcher on every rank
    add_limit_arguments(p)
    p.set_defaults(func=serve)


def build_gateway(args: argparse.Namespace, lm=None, ranks=None):
    """Everything but the socket: model, libraries, presets, engine. Prints refused artifacts, one line each.

    With `ranks` (rank 0 of serve --ranks) `lm` is this rank's part of the model, and the prompt
    cache is off: every rank reads every prompt whole.
    """
    import dataclasses

    import mlx_interp.steering  # noqa: F401  (OpenBLAS before mlx)
    from mlx_interp.steering.model import load_model

    from .app import Gateway
    from .auth import Keys
    from .catalog import build_shelves
    from .engine import Engine
    from .presets import load_presets

    limits = limits_from(args)
    if ranks is not None:
        limits = dataclasses.replace(limits, prompt_cache_entries=0)
    if lm is None:
        lm = load_model(args.model, dtype=args.dtype, progress=True)
    model_ids = tuple(dict.fromkeys(["default", lm.model_id]))
    vectors, probes = build_shelves(lm, args.vectors, args.probes)
    for err in vectors.load_all() + probes.load_all():
        print(f"refused {err}", file=sys.stderr)
    presets = load_presets(args.presets, model_ids) if args.presets else {}
    engine = Engine(lm, limits, ranks=ranks)
    if engine.batch_fit is not None:
        print(engine.batch_fit.describe())
    limits = engine.limits  # with max_batch fitted to the machine
    engine.start()
    keys = Keys(api_key=args.api_key or os.environ.get(ENV_API_KEY) or None, admin_key=args.admin_key or os.environ.get(ENV_ADMIN_KEY) or None)
    return Gateway(lm=lm, engine=engine, vectors=vectors, probes=probes, limits=limits, keys=keys, presets=presets,
                   model_ids=model_ids, cors_origins=tuple(args.cors_origin))


EXAMPLE_VECTOR, EXAMPLE_PROBE = "green_red", "concession"  # the shipped ones the README's example uses


def _pick(names: list[str], preferred: str) -> str:
    return preferred if preferred in names else names[0]


def example_curl(url: str, gateway) -> str:
    import json

    body = {"model": "default", "messages": [{"role": "user", "content": "What colour is fresh grass? Answer with one word."}],
            "max_tokens": 12, "temperature": 0}
    vectors, probes = gateway.vectors.names(), gateway.probes.names()
    if vectors:
        # unsteered and steered side by side: choice 0 gets alpha 0, choice 1 the vector's (calibrated) default
        body["n"] = 2
        vector = _pick(vectors, EXAMPLE_VECTOR)
        body["steer"] = [{"vector": vector, "alpha": [0, gateway.vectors.get(vector).default_alpha]}]
    if probes:  # the shipped example's names when served, so a user's own files do not change the README's line
        body["probes"] = [_pick(probes, EXAMPLE_PROBE)]
    auth = " -H 'Authorization: Bearer $MLX_INTERP_API_KEY'" if gateway.keys.api_key else ""
    return f"curl {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} -d '{json.dumps(body)}'"


def serve(args: argparse.Namespace) -> int:
    from .auth import is_loopback

    api_key = args.api_key or os.environ.get(ENV_API_KEY)
    if not is_loopback(args.host) and not api_key:
        raise ValueError(f"refusing to bind {args.host} without an API key; pass --api-key or set {ENV_API_KEY}")
    if (args.ranks > 1 or args.hostfile) and not args.as_rank:
        from .rank_launch import launch

        return launch(args)
    ranks = None
    if args.as_rank:
        from . import rank_launch

        lm, ranks = rank_launch.join(args)
        if ranks is None:  # a follower: it ran rank 0's operations until told to stop
            return lm
        gateway = build_gateway(args, lm=lm, ranks=ranks)
    import uvicorn

    from .app import create_app

    from .edge import MAX_HEAD_BYTES, edge_protocol, quiet_floods

    if ranks is None:
        gateway = build_gateway(args)
    if not api_key and is_loopback(args.host):  # no key on loopback: refuse other Host names (DNS rebinding)
        gateway.allowed_hosts = loopback_host_names(args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}"
    print(f"serving {gateway.lm.model_id} at {url}  ({len(gateway.vectors.names())} vectors, {len(gateway.probes.names())} probes)")
    print(f"try: {example_curl(url, gateway)}", flush=True)
    limits = gateway.limits
    config = uvicorn.Config(
        create_app(gateway), host=args.host, port=args.port, log_level=args.log_level, access_log=False,
        loop="asyncio", http=edge_protocol(connection_cap(limits.max_connections), limits.header_timeout_s),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES, timeout_keep_alive=limits.keep_alive_s,
        # SIGTERM/SIGINT: running requests get --drain-s, then the engine ends them (an in-band error and
        # [DONE]); uvicorn cancels what is left END_GRACE_S later.
        timeout_graceful_shutdown=limits.drain_s + END_GRACE_S,
    )
    server = graceful_server(uvicorn, config, gateway.engine, limits.drain_s)
    quiet_floods()
    set_switch_interval(os.environ.get(ENV_SWITCH_INTERVAL))

    def model_thread_died() -> None:  # called from the model thread: stop serving, exit non-zero
        if ranks is not None:
            from .ranks import write_status

            write_status(EXIT_MODEL_THREAD_DIED, str(gateway.engine.failure or ranks.failure))
        server.should_exit = True

    gateway.engine.on_death = model_thread_died
    if ranks is not None:
        from .rank_launch import watch_for_hangs

        watch_for_hangs(gateway.engine, ranks)
    server.run()
    gateway.engine.stop()  # joined here too: a second Ctrl+C skips the app's shutdown, where it normally stops
    code = 0
    if gateway.engine.failure is not None:
        print(f"exiting: the model thread stopped ({gateway.engine.failure})", file=sys.stderr, flush=True)
        code = EXIT_MODEL_THREAD_DIED
    return exit_now(code)


def set_switch_interval(value: str | None) -> None:
    """Apply MLX_INTERP_SWITCH_INTERVAL: how long a thread may hold the GIL while another waits for it.

    The model thread and the event loop share the GIL; with one stream on a GPU the step is bound by
    the model thread's launches, so how soon it gets the GIL back from the loop is on the critical path.
    Unset: Python's default. A bad value is one line on stderr, not a failed start.
    """
    if not value:
        return
    try:
        seconds = float(value)
        if not 0 < seconds <= 1:
            raise ValueError
    except ValueError:
        print(f"ignoring {ENV_SWITCH_INTERVAL}={value!r}: expected seconds in (0, 1]", file=sys.stderr, flush=True)
        return
    sys.setswitchinterval(seconds)


def graceful_server(uvicorn, config, engine, drain_s: float):
    """A uvicorn.Server whose signal stop is a clean exit, and which ends held requests once the drain time is up.

    uvicorn re-raises the SIGTERM/SIGINT it handled after its graceful shutdown, so a clean stop
    would read as killed by the signal (-15); here the stop is the exit status 0 a service manager expects.
    A second SIGINT still forces the stop (uvicorn's handle_exit).
    """
    import asyncio
    import contextlib
    import signal
    import threading

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # Through the event loop (a wakeup fd), not signal.signal: with Python 3.11 a signal that a
            # busy non-main thread (the model thread) happens to receive was now and then never run by the
            # main thread (seen for SIGINT right after a request started: the server streamed on).
            # Nothing is re-raised afterwards: a handled stop exits 0.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            loop = asyncio.get_running_loop()
            handled = (signal.SIGINT, signal.SIGTERM)
            for sig in handled:
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in handled:
                    loop.remove_signal_handler(sig)

        async def shutdown(self, sockets=None):
            timer = asyncio.get_running_loop().call_later(drain_s, engine.end_all)
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()

    return Server(config)


def exit_now(code: int) -> int:
    """The model thread is joined: leave without running mlx's C++ static destructors.

    The CUDA build aborted at interpreter exit ("terminate called without an active exception",
    SIGABRT) after a clean shutdown, mlx_lm.server too; the CPU build does it now and then after a
    long stream (seen once in a few dozen SIGINT stops on this VM): a thread of mlx's meets its
    destructor there. Nothing of ours is left to run, so after flushing, the process ends with `code`.
    MLX_INTERP_ORDINARY_EXIT=1 keeps the ordinary interpreter exit (for debugging that abort).
    """
    if os.environ.get("MLX_INTERP_ORDINARY_EXIT") == "1":
        return code
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


FD_RESERVE = 64  # file descriptors kept for the model, libraries and logs, beyond client connections


def connection_cap(wanted: int) -> int:
    """--max-connections, lowered to fit the process's file-descriptor limit (mlx-lm raises it to 2048 at import)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and wanted > soft - FD_RESERVE:
        fitted = max(1, soft - FD_RESERVE)
        print(f"--max-connections {wanted} does not fit the file-descriptor limit {soft}; using {fitted}", file=sys.stderr)
        return fitted
    return wanted


def loopback_host_names(port: int) -> frozenset[str]:
    """Host header values a browser sends for this server on loopback, with and without the port."""
    names = ("127.0.0.1", "localhost", "[::1]")
    return frozenset(names) | frozenset(f"{n}:{port}" for n in names)
