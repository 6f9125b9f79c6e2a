"""`serve --ranks N` / `--hostfile FILE`: start every rank, and join the set as one rank.

The process the user (or the service manager) starts is a small launcher: it
makes sure the model is in the local cache, then starts `serve ... --as-rank`
once per rank: itself for --ranks (loopback ring, the environment mlx.launch
would set), through mlx.launch for --hostfile (ssh to each machine). Each rank loads its part of the model
(steering.sharding), the ranks compare model fingerprints, rank 0 serves HTTP
and the others follow it (gateway/ranks.py).

Rank 0 writes how it ended to a status file (mlx.launch does not pass exit
codes on: it exits 0, and stops every rank once one exits non-zero), and the
launcher exits with that code: 70 when a rank died or hung (the service
manager restarts the set), 0 after a stop it was asked for.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from .ranks import EXIT_RANK_FAILED, STATUS_ENV, write_status

BACKEND_ENV = "MLX_INTERP_RANK_BACKEND"
HANG_GRACE_S = 3.0
LOST_GRACE_S = 5.0  # a rank exited: time for rank 0 to fail its requests itself before it is stopped
FOLLOWER_STOP_S = 10.0  # rank 0 ended: time for the other ranks to follow before they are stopped  # after a hang is declared: time for the 503s to reach their clients before the process exits
LAUNCH_FLAGS = {"--ranks", "--hostfile", "--ring-port"}  # the launcher's own: the ranks do not get them


def rank_argv(argv: list[str]) -> list[str]:
    """The `serve` arguments for each rank: the launcher's own flags removed."""
    if "serve" not in argv:
        raise ValueError("serve --ranks must be started from the command line")
    rest = argv[argv.index("serve") + 1:]
    out, skip = [], False
    for a in rest:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in LAUNCH_FLAGS:
            skip = "=" not in a
            continue
        out.append(a)
    return out


def free_port_run(n: int, tries: int = 50) -> int:
    """A first port p with p .. p+n-1 free on loopback (the ring backend listens on one port per rank)."""
    for _ in range(tries):
        p = random.randint(20000, 40000)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p + i))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports for the ring backend; pass --ring-port")


def launch(args) -> int:
    from mlx_interp.steering.model import resolve_model_path

    resolve_model_path(args.model, progress=True)  # convert or download once, not once per rank
    fd, status = tempfile.mkstemp(prefix="mlx-interp-ranks-", suffix=".status")
    os.close(fd)
    try:
        return _launch_hosts(args, status) if args.hostfile else _launch_local(args, status)
    finally:
        for path in (status, status + ".pid", status + ".hosts"):
            try:
                os.unlink(path)
            except OSError:
                pass


def _rank_command() -> list[str]:
    return [sys.executable, "-m", "mlx_interp.cli", "serve", *rank_argv(sys.argv), "--as-rank"]


def _launch_local(args, status: str) -> int:
    """N ranks on this machine, supervised here.

    The ranks meet exactly as under mlx.launch (MLX_HOSTFILE lists one loopback address per
    rank, MLX_RANK says which one is theirs); we start them ourselves because mlx.launch's
    output relay spins a core while the ranks run, which a small machine cannot spare.
    """
    import json

    n = args.ranks
    port = args.ring_port or free_port_run(n)
    with open(status + ".hosts", "w") as f:
        json.dump([[f"127.0.0.1:{port + i}"] for i in range(n)], f)
    print(f"starting one model across {n} processes on this machine (mlx.distributed, ring backend, ports {port}-{port + n - 1})", flush=True)
    env = {**os.environ, "MLX_HOSTFILE": status + ".hosts", STATUS_ENV: status, BACKEND_ENV: "ring"}
    procs = [subprocess.Popen(_rank_command(), env={**env, "MLX_RANK": str(r)}) for r in range(n)]
    stopping: list[int] = []

    def stop(signum, frame) -> None:
        # First signal: rank 0 drains like a single server, then tells the other ranks to stop.
        # A second one stops every rank at once.
        targets = procs[:1] if not stopping else procs
        stopping.append(signum)
        for p in targets:
            _signal(lambda: p.terminate())

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    lost = None
    try:
        while procs[0].poll() is None:
            for r, p in enumerate(procs[1:], 1):
                if lost is None and p.poll() is not None and not stopping:
                    lost = f"rank {r} (pid {p.pid}) exited with code {p.returncode}"
                    print(f"rank 0: {lost}", file=sys.stderr, flush=True)
                    lost_at = time.monotonic()
            if lost is not None and procs[0].poll() is None and time.monotonic() - lost_at > LOST_GRACE_S:
                _signal(lambda: procs[0].terminate())  # idle: rank 0 did not notice; stop it
                lost_at = float("inf")
            time.sleep(0.2)
        deadline = time.monotonic() + FOLLOWER_STOP_S  # rank 0 told them to stop (or they lost it)
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                _signal(lambda: p.terminate())
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a stopped (hung) rank ignores SIGTERM until it runs again
                p.kill()
                p.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    code, reason = _read_status(status)
    if code:
        print(f"exiting: {reason}", file=sys.stderr, flush=True)
        return code
    own = procs[0].returncode
    if own is not None and own > 0:  # rank 0 failed by itself (e.g. a bad argument, which every rank reports)
        return own
    if lost is not None:
        print(f"exiting: {lost}", file=sys.stderr, flush=True)
        return EXIT_RANK_FAILED
    return 0


def _launch_hosts(args, status: str) -> int:
    """Ranks on the machines of an mlx host file, through mlx.launch (ssh to each host; this machine must be the first)."""
    import json

    with open(args.hostfile) as f:
        data = json.load(f)
    backend = (data.get("backend") if isinstance(data, dict) else None) or "ring"
    launcher = [sys.executable, "-c", "import sys; from mlx._distributed_utils.launch import main; sys.argv[0] = 'mlx.launch'; main()",
                "--hostfile", args.hostfile, "--backend", backend, "--starting-port", str(args.ring_port or 32323),
                "--env", f"{STATUS_ENV}={status}", "--env", f"{BACKEND_ENV}={backend}", "--", *_rank_command()]
    print(f"starting one model across the hosts of {args.hostfile} (mlx.launch)", flush=True)
    proc = subprocess.Popen(launcher, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    warnings: list[str] = []

    def relay() -> None:  # mlx.launch's warnings name the rank that ended
        for line in proc.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            if "Node with rank" in line:
                warnings.append(line.replace("\x1b[33m", "").replace("\x1b[0m", "").replace("[WARN]", "").strip())

    relay_thread = threading.Thread(target=relay, daemon=True)
    relay_thread.start()
    stopping = []

    def stop(signum, frame) -> None:
        pid = _rank0_pid(status)
        if not stopping and pid:
            _signal(lambda: os.kill(pid, signal.SIGTERM))
        else:
            _signal(lambda: os.killpg(proc.pid, signal.SIGTERM))
        stopping.append(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while proc.poll() is None:
            time.sleep(0.2)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    relay_thread.join(timeout=2)
    code, reason = _read_status(status)
    if code:
        print(f"exiting: {reason}", file=sys.stderr, flush=True)
        return code
    if stopping:
        return 0
    if warnings:
        print(f"exiting: a rank ended: {'; '.join(warnings)}", file=sys.stderr, flush=True)
        return EXIT_RANK_FAILED
    return 0


def _signal(fn) -> None:
    try:
        fn()
    except OSError:
        pass


def _rank0_pid(status: str) -> int | None:
    try:
        return int(open(status + ".pid").read().strip())
    except (OSError, ValueError):
        return None


def _read_status(path: str) -> tuple[int, str]:
    try:
        text = open(path).read().strip()
    except OSError:
        return 0, ""
    if not text:
        return 0, ""
    code, _, reason = text.partition(" ")
    try:
        return int(code), reason
    except ValueError:
        return 1, text


def join(args):
    """Run as one rank under mlx.launch: load this rank's part of the model and meet the others.

    Returns (lm, RankSet) on rank 0; on any other rank runs rank 0's operations until told to
    stop and returns (exit code, None).
    """
    import mlx_interp.steering  # noqa: F401  (OpenBLAS before mlx)
    import mlx.core as mx
    from mlx_interp.steering.model import load_model
    from mlx_interp.steering.sharding import default_mode, shard_model

    from .ranks import Link, RankSet, follow, handshake

    group = mx.distributed.init(strict=True, backend=os.environ.get(BACKEND_ENV, "ring"))
    rank, size = group.rank(), group.size()

    def shard(model):
        mode = args.parallel if args.parallel != "auto" else default_mode(model, size)
        return shard_model(model, mode, group)

    lm = load_model(args.model, dtype=args.dtype, progress=rank == 0, shard=shard)
    link = Link(group)
    infos = handshake(link, lm)
    if rank != 0:
        return follow(lm, link), None
    status = os.environ.get(STATUS_ENV)
    if status:
        with open(status + ".pid", "w") as f:
            f.write(str(os.getpid()))
    plan = lm.shard
    parts = ", ".join(f"rank {i.rank} layers {i.plan['layers'][0]}-{i.plan['layers'][1] - 1}" if "layers" in i.plan else f"rank {i.rank}"
                      for i in infos)
    print(f"{size} ranks, {plan.mode} parallel: {parts}", flush=True)
    return lm, RankSet(link, infos, lm, timeout_s=args.rank_timeout)


def watch_for_hangs(engine, ranks) -> None:
    """A rank that stops answering (no progress for --rank-timeout): every request fails (503), the process exits 70."""
    from .errors import Unavailable

    def on_hang(reason: str) -> None:
        write_status(EXIT_RANK_FAILED, reason)
        engine.abandon(Unavailable(f"{reason}; the server is restarting"))
        threading.Timer(HANG_GRACE_S, lambda: os._exit(EXIT_RANK_FAILED)).start()

    ranks.on_hang = on_hang
