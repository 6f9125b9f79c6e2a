"""One model across several processes (`serve --ranks N` / `--hostfile`): the control plane between ranks.

Every rank loads its part of the model (steering.sharding) and holds a
DecodeBatch of its own. Rank 0 runs HTTP and the whole engine: admission,
sampling, stops, guards, libraries. The other ranks ("followers") run no
scheduling of their own: rank 0's DecodeBatch is wrapped in ReplicatedBatch,
which sends every operation that touches the model (a prompt chunk, a row
joining or leaving, a row's new steering, a decode step with its tokens) to
every follower before running it locally, so all ranks run identical batches
in identical order. Messages go over mx.distributed itself: rank 0 contributes
the pickled bytes to an all_sum, the others zeros (Link).

Steering: a row's resolved interventions (directions included) travel with the
operation, so the followers need no vector library: an upload, a delete or a
re-upload on rank 0 can never leave the ranks disagreeing, and a request's
steering is fixed when it is admitted, as in one process.

Probes: tensor parallel gives every rank complete layer outputs, so rank 0
scores alone. Pipeline parallel: each rank scores the layers it holds with the
probe bank rank 0 sent it, and only the (rows, layers, probes) scores travel,
summed into rank 0 (ShardedBank); hidden states never leave a rank except as
the pipeline's own activations.

Ordering: before sending the next message rank 0 evaluates everything the
previous operation left lazy (`_settle`), so the communication of one
operation (pipeline send/recv, tensor all-reduces, score sums) never
interleaves with the next message on the wire.

Failure: a peer that dies makes the next collective raise ("[ring] connection
to a peer was lost"): rank 0 turns that into RankFailure, which stops the
model thread (every request it holds fails with 503) and the server exits
non-zero. The ring backend does not always raise (a peer killed mid-step can
leave rank 0 waiting), so the Watchdog also acts: while rank 0 waits on the
other ranks, a rank on this host that no longer exists, or no progress for
--rank-timeout seconds (a hung rank, or one on another host), fails every
request (503), names the rank, and exits the process (EXIT_RANK_FAILED).
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import socket
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger("mlx_interp.gateway")

FRAME = 4096  # bytes per control message in one collective; longer messages take a second one
EXIT_RANK_FAILED = 70  # same as a model thread's death: the service manager restarts the set
STATUS_ENV = "MLX_INTERP_RANK_STATUS"  # rank 0 writes "<exit code> <reason>" here for the launcher


class RankFailure(BaseException):
    """A rank stopped answering: a BaseException, so the engine's per-step handler lets it stop the model thread."""


# -- transport: messages over mx.distributed -------------------------------------------------------


class Link:
    """Rank 0 -> every rank: pickled messages carried by mx.distributed.all_sum over the group.

    The ranks are one deployment of one code base that trust each other (like mlx.launch's own
    ssh): pickle is the serialization.
    """

    def __init__(self, group):
        self.group = group
        self.rank = group.rank()
        self.size = group.size()

    def _sum(self, buf: np.ndarray) -> np.ndarray:
        import mlx.core as mx

        out = mx.distributed.all_sum(mx.array(buf), group=self.group, stream=mx.cpu)
        mx.eval(out)
        return np.array(out)

    def send(self, obj) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        frame = np.zeros(FRAME, dtype=np.uint8)
        frame[:8] = np.frombuffer(len(data).to_bytes(8, "little"), dtype=np.uint8)
        head = data[: FRAME - 8]
        frame[8: 8 + len(head)] = np.frombuffer(head, dtype=np.uint8)
        self._sum(frame)
        if len(data) > FRAME - 8:
            self._sum(np.frombuffer(data[FRAME - 8:], dtype=np.uint8).copy())

    def recv(self):
        frame = self._sum(np.zeros(FRAME, dtype=np.uint8))
        n = int.from_bytes(frame[:8].tobytes(), "little")
        data = frame[8: 8 + min(n, FRAME - 8)].tobytes()
        if n > FRAME - 8:
            data += self._sum(np.zeros(n - (FRAME - 8), dtype=np.uint8)).tobytes()
        return pickle.loads(data)

    def gather(self, obj, size: int = 1024) -> list:
        """Every rank's small `obj`, on every rank (start-up handshake)."""
        import mlx.core as mx

        data = pickle.dumps(obj)
        if len(data) > size - 8:
            raise ValueError("handshake record too large")
        frame = np.zeros(size, dtype=np.uint8)
        frame[:8] = np.frombuffer(len(data).to_bytes(8, "little"), dtype=np.uint8)
        frame[8: 8 + len(data)] = np.frombuffer(data, dtype=np.uint8)
        out = mx.distributed.all_gather(mx.array(frame), group=self.group, stream=mx.cpu)
        mx.eval(out)
        rows = np.array(out).reshape(self.size, size)
        return [pickle.loads(r[8: 8 + int.from_bytes(r[:8].tobytes(), "little")].tobytes()) for r in rows]


# -- who the ranks are -----------------------------------------------------------------------------


@dataclass
class RankInfo:
    rank: int
    host: str
    pid: int
    fingerprint: str
    plan: dict

    def state(self) -> str:
        """'running', 'stopped', 'gone' for a rank on this host; 'remote' for another host's."""
        if self.host != socket.gethostname():
            return "remote"
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return "running"
        try:
            stat = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()[0]
            if stat in ("Z", "X"):  # dead, not yet reaped by the launcher
                return "gone"
            if stat in ("T", "t"):
                return "stopped"
        except OSError:
            pass
        return "running"


def handshake(link: Link, lm) -> list[RankInfo]:
    """Every rank's host, pid, model fingerprint and shard plan; every rank refuses a mismatch."""
    mine = RankInfo(link.rank, socket.gethostname(), os.getpid(), lm.fingerprint, lm.shard.describe() if lm.shard else {})
    infos = [RankInfo(**r) for r in link.gather(vars(mine))]
    prints = {i.fingerprint for i in infos}
    if len(prints) != 1:
        detail = ", ".join(f"rank {i.rank} ({i.host}): {i.fingerprint[:12]}" for i in infos)
        raise SystemExit(f"the ranks loaded different models: {detail}")
    return infos


def describe_failure(infos: list[RankInfo], what: str) -> str:
    """Which ranks look dead or stopped, in one line (ranks on other hosts cannot be checked from here)."""
    bad = [f"rank {i.rank} (pid {i.pid} on {i.host}) is {s}" for i in infos[1:] for s in [i.state()] if s in ("gone", "stopped")]
    if bad:
        return f"{what}: " + "; ".join(bad)
    remote = [str(i.rank) for i in infos[1:] if i.state() == "remote"]
    hint = f" (ranks {', '.join(remote)} run on other hosts: see their logs)" if remote else ""
    return f"{what}: a peer rank stopped answering{hint}"


# -- watchdog ---------------------------------------------------------------------------------------


class Watchdog:
    """Fires when rank 0 has waited on the other ranks for `timeout_s` without progress."""

    def __init__(self, timeout_s: float, on_fire, gone=None):
        self.timeout_s = timeout_s
        self.on_fire = on_fire
        self.gone = gone  # -> a rank on this host that no longer exists, or None: no need to wait out the timeout
        self._since: float | None = None  # when the oldest outstanding wait began
        self._what = ""
        self._lock = threading.Lock()
        self.fired = False
        self._thread = threading.Thread(target=self._run, name="mlx-interp-rank-watchdog", daemon=True)

    def start(self) -> None:
        if self.timeout_s > 0:
            self._thread.start()

    def busy(self, what: str) -> None:
        with self._lock:
            if self._since is None:
                self._since, self._what = time.monotonic(), what

    def progress(self, outstanding: bool) -> None:
        """Rank 0 got what it waited for; `outstanding`: it now waits on something else (the clock restarts)."""
        with self._lock:
            self._since = time.monotonic() if outstanding else None

    def _run(self) -> None:
        while not self.fired:
            time.sleep(min(1.0, self.timeout_s / 4))
            with self._lock:
                waiting = self._since is not None
                late = waiting and time.monotonic() - self._since > self.timeout_s
                what = self._what
            if late or (waiting and self.gone is not None and self.gone() is not None):
                self.fired = True
                self.on_fire(what)


# -- rank 0: the replicated batch ---------------------------------------------------------------------


class RankSet:
    """Rank 0's view of the set: the link, who the ranks are, the watchdog; wraps the engine's batch and probe bank."""

    def __init__(self, link: Link, infos: list[RankInfo], lm, timeout_s: float = 60.0):
        self.link = link
        self.infos = infos
        self.plan = lm.shard
        self.pipeline = lm.shard is not None and lm.shard.mode == "pipeline"
        self.num_layers = lm.num_layers
        self.hidden_size = lm.hidden_size
        self.first_layer, self.end_layer = (lm.shard.first_layer, lm.shard.end_layer) if self.pipeline else (0, lm.num_layers)
        self.watchdog = Watchdog(timeout_s, self._hung, gone=self._gone)
        self.on_hang = None  # set by the server: fail every request, then exit
        self.failure: str | None = None
        self.batch: ReplicatedBatch | None = None

    def health(self) -> dict:
        return {"size": self.link.size, "parallel": self.plan.mode if self.plan else None,
                "ranks": [{"rank": i.rank, "host": i.host, "pid": i.pid, **i.plan} for i in self.infos]}

    def _gone(self):
        return next((i for i in self.infos[1:] if i.state() == "gone"), None)

    def _hung(self, what: str) -> None:
        why = f"lost a rank during {what}" if self._gone() is not None else f"no answer for {self.watchdog.timeout_s:g}s during {what}"
        self.failure = describe_failure(self.infos, why)
        log.error("%s", self.failure)
        if self.on_hang is not None:
            self.on_hang(self.failure)

    def failed(self, exc: BaseException, what: str) -> RankFailure:
        for _ in range(4):  # the lost connection can be seen before the peer's process is gone
            if any(i.state() in ("gone", "stopped") for i in self.infos[1:]):
                break
            time.sleep(0.25)
        self.failure = describe_failure(self.infos, f"{what} failed ({exc})")
        log.error("%s", self.failure)
        return RankFailure(self.failure)

    @contextmanager
    def session(self, batch):
        """The engine's batch, replicated to every rank for the model thread's life; tells the followers to stop after."""
        self.batch = ReplicatedBatch(batch, self)
        self.watchdog.start()
        clean = False
        try:
            yield self.batch
            clean = True
        finally:
            if clean and self.failure is None:
                try:
                    self.batch.send(("stop",))
                except BaseException:  # noqa: BLE001 - stopping anyway
                    pass

    def bank_keeper(self, lm):
        from .probe_upkeep import BankKeeper

        return RankBankKeeper(self, lm.num_layers, lm.hidden_size) if self.pipeline else BankKeeper(lm.num_layers, lm.hidden_size)


def _host_tokens(tokens) -> list[int]:
    if hasattr(tokens, "tolist"):
        return [int(t) for t in np.array(tokens).reshape(-1)]
    return [int(t) for t in tokens]


class ReplicatedBatch:
    """A DecodeBatch on rank 0 whose every model operation runs on every rank, in the same order."""

    def __init__(self, batch, ranks: RankSet):
        self._batch = batch
        self._ranks = ranks
        self._ids = itertools.count(1)
        self._rids: dict = {}  # row uid -> int id the followers know it by
        self._prefill_ids: dict[int, int] = {}  # id(Prefill) -> id of the follower's copy
        self._forget: list[int] = []  # follower prefills and tasks rank 0 no longer holds
        self._pending: list = []  # lazy outputs of the last operation, evaluated before the next message
        self.last_source = None  # what the last model call recorded: "step" or ("prefill", id)

    # -- plumbing --
    def send(self, op) -> None:
        ranks = self._ranks
        if ranks.failure is not None:
            raise RankFailure(ranks.failure)
        self.settle()
        forget, self._forget = self._forget, []
        ranks.watchdog.busy(op[0])  # until the operation has run here too (`done`)
        try:
            ranks.link.send((forget, op))
        except RuntimeError as exc:
            raise ranks.failed(exc, f"sending {op[0]!r} to the ranks") from None

    def done(self) -> None:
        """The operation ran here: the watchdog waits on its lazy outputs, if any, from now on; else on nothing."""
        self._ranks.watchdog.progress(outstanding=bool(self._pending))

    def settle(self) -> None:
        """Evaluate what the previous operation left lazy (its sends, receives and sums)."""
        import mlx.core as mx

        if self._pending:
            pending, self._pending = self._pending, []
            try:
                mx.eval(pending)
            except RuntimeError as exc:
                raise self._ranks.failed(exc, "a distributed step") from None
        self._ranks.watchdog.progress(outstanding=False)

    def owe(self, *arrays) -> None:
        self._pending.extend(a for a in arrays if a is not None)

    def _drop_later(self, tid: int) -> None:
        self._forget.append(tid)

    # -- what the engine reads --
    def __len__(self) -> int:
        return len(self._batch)

    @property
    def uids(self) -> list:
        return self._batch.uids

    @property
    def rows(self):
        return self._batch.rows

    def interventions_of(self, uid):
        return self._batch.interventions_of(uid)

    # -- what changes the model's state on every rank --
    def start_prefill(self, tokens, interventions=(), cache=None, cached_tokens: int = 0, capture_all: bool = False,
                      chunk: int | None = None, prompt_logprobs: int | None = None):
        from .errors import BadRequest

        if cache is not None or cached_tokens:
            raise RuntimeError("the prompt cache is off with --ranks: every rank must read the whole prompt")
        if capture_all and self._ranks.pipeline:
            raise BadRequest("per-token probe scores of the prompt (echo with probes) are not served with --parallel pipeline yet")
        kwargs = {} if chunk is None else {"chunk": chunk}
        tid = next(self._ids)
        ivs = tuple(interventions)
        self.send(("start", tid, list(tokens), ivs, capture_all, kwargs.get("chunk")))
        task = self._batch.start_prefill(list(tokens), ivs, capture_all=capture_all, prompt_logprobs=prompt_logprobs, **kwargs)
        self.done()
        return _ReplicatedTask(self, tid, task)

    def prefill(self, tokens, interventions=(), cache=None, cached_tokens: int = 0, capture_all: bool = False,
                prompt_logprobs: int | None = None):
        task = self.start_prefill(tokens, interventions, cache, cached_tokens, capture_all, prompt_logprobs=prompt_logprobs)
        while True:
            done = task.advance()
            if done is not None:
                return done

    def add(self, uid, prefill, interventions=()) -> None:
        tid = self._prefill_ids.get(id(prefill))
        if tid is None:
            raise RuntimeError("a prefill that did not run on every rank cannot join the batch")
        rid = next(self._ids)
        ivs = tuple(interventions)
        self.send(("add", rid, tid, ivs))
        self._batch.add(uid, prefill, ivs)
        self._rids[uid] = rid
        self.done()

    def remove(self, uids) -> None:
        uids = list(uids)
        rids = [self._rids.pop(u) for u in uids if u in self._rids]
        if rids:
            self.send(("remove", rids))
        self._batch.remove(uids)
        self.done()

    def set_interventions(self, uid, interventions) -> None:
        ivs = tuple(interventions)
        self.send(("set", self._rids[uid], ivs))
        self._batch.set_interventions(uid, ivs)
        self.done()

    def step(self, next_tokens, capture: bool = True):
        tokens = _host_tokens(next_tokens)
        self.send(("step", tokens, bool(capture) and self._ranks.pipeline))
        logits, hidden = self._batch.step(tokens, capture=capture)
        self.owe(logits, hidden)
        self.done()
        self.last_source = "step"
        return logits, hidden


class _ReplicatedTask:
    """Rank 0's PrefillTask, each chunk run on every rank."""

    def __init__(self, batch: ReplicatedBatch, tid: int, task):
        self._rb = batch
        self.tid = tid
        self._task = task
        self._state = {"finished": False}
        weakref.finalize(self, _forget_unfinished, weakref.ref(batch), tid, self._state)

    @property
    def tokens_left(self) -> int:
        return self._task.tokens_left

    @property
    def reduce(self):
        return self._task.reduce

    @reduce.setter
    def reduce(self, fn) -> None:
        self._task.reduce = fn

    def advance(self, limit: int | None = None):
        rb = self._rb
        rb.send(("advance", self.tid, limit))
        pre = self._task.advance(limit)
        rb.done()
        if pre is None:
            return None
        self._state["finished"] = True
        key = id(pre)
        rb._prefill_ids[key] = self.tid
        weakref.finalize(pre, _forget_prefill, weakref.ref(rb), key, self.tid)
        rb.last_source = ("prefill", self.tid)
        return pre


def _forget_unfinished(rb_ref, tid: int, state: dict) -> None:
    rb = rb_ref()
    if rb is not None and not state["finished"]:
        rb._drop_later(tid)


def _forget_prefill(rb_ref, key: int, tid: int) -> None:
    rb = rb_ref()
    if rb is not None:
        rb._prefill_ids.pop(key, None)
        rb._drop_later(tid)


# -- probes across pipeline ranks ----------------------------------------------------------------------


def _partial_logits(hidden, W, b, first: int, end: int, num_layers: int):
    """(B, l, D) states of layers [first, end) -> (B, L, P) probe logits with zeros outside [first, end)."""
    import mlx.core as mx

    local = mx.matmul(hidden.astype(W.dtype).transpose(1, 0, 2), W[first:end]).transpose(1, 0, 2).astype(mx.float32)
    local = local + b[first:end]
    B, P = local.shape[0], local.shape[2]
    parts = [mx.zeros((B, first, P), mx.float32)] if first else []
    parts.append(local)
    if end < num_layers:
        parts.append(mx.zeros((B, num_layers - end, P), mx.float32))
    return mx.concatenate(parts, axis=1) if len(parts) > 1 else local


class RankBankKeeper:
    """BankKeeper for pipeline ranks: the bank goes to every rank when it changes; scores sum over ranks."""

    def __init__(self, ranks: RankSet, num_layers: int, hidden_size: int):
        from .probe_upkeep import BankKeeper

        self._ranks = ranks
        self._keeper = BankKeeper(num_layers, hidden_size)
        self._sent = None

    @property
    def bank(self):
        return self._keeper.bank

    def ensure(self, running_specs, extra=()) -> None:
        self._keeper.ensure(running_specs, extra)
        bank = self._keeper.bank
        if bank is not None and bank is not self._sent:
            rb = self._ranks.batch
            rb.send(("bank", np.array(bank.W), np.array(bank.b), np.array(bank.mask)))
            rb.done()
            bank.__class__ = _sharded_bank_class(type(bank))
            bank._ranks = self._ranks
            self._sent = bank


_sharded_classes: dict[type, type] = {}


def _sharded_bank_class(cls: type) -> type:
    if cls not in _sharded_classes:

        def logits(self, hidden):
            """(B, l, D) states of rank 0's layers -> (B, L, P): each rank scores its own layers, the sum arrives here."""
            import mlx.core as mx

            ranks = self._ranks
            rb = ranks.batch
            rb.send(("scores", rb.last_source))
            part = _partial_logits(hidden, self.W, self.b, ranks.first_layer, ranks.end_layer, ranks.num_layers)
            out = mx.distributed.all_sum(part, group=ranks.link.group, stream=mx.cpu)
            rb.owe(out)
            rb.done()
            return out

        def scores(self, hidden):
            """Probabilities from the summed logits. The base class's compiled scorer fuses the matmul over
            all layers, which this rank does not hold, so the sharded bank squashes its own logits."""
            import mlx.core as mx

            return mx.where(self.mask, mx.sigmoid(self.logits(hidden)), self._nan)

        _sharded_classes[cls] = type(f"Sharded{cls.__name__}", (cls,), {"logits": logits, "scores": scores})
    return _sharded_classes[cls]


# -- the other ranks -------------------------------------------------------------------------------------


@dataclass
class Follower:
    """A rank other than 0: runs, in order, every model operation rank 0 sends."""

    batch: object
    link: Link
    plan: object
    tasks: dict = field(default_factory=dict)
    prefills: dict = field(default_factory=dict)
    bank: tuple | None = None
    last_hidden: object = None

    def run(self) -> None:
        while True:
            forget, op = self.link.recv()
            for tid in forget:
                self.tasks.pop(tid, None)
                self.prefills.pop(tid, None)
            if op[0] == "stop":
                return
            getattr(self, "_" + op[0])(*op[1:])

    def _start(self, tid, tokens, ivs, capture_all, chunk):
        kwargs = {} if chunk is None else {"chunk": chunk}
        # capture_all (echo with probes) reaches here in tensor parallel only, where rank 0 scores alone
        self.tasks[tid] = self.batch.start_prefill(tokens, ivs, **kwargs)

    def _advance(self, tid, limit):
        pre = self.tasks[tid].advance(limit)
        if pre is not None:
            del self.tasks[tid]
            self.prefills[tid] = pre

    def _add(self, rid, tid, ivs):
        self.batch.add(rid, self.prefills[tid], ivs)

    def _remove(self, rids):
        self.batch.remove(rids)

    def _set(self, rid, ivs):
        self.batch.set_interventions(rid, ivs)

    def _step(self, tokens, capture):
        import mlx.core as mx

        out, hidden = self.batch.step(tokens, capture=capture)
        mx.eval([out] + ([hidden] if hidden is not None else []))
        self.last_hidden = hidden

    def _bank(self, W, b, mask):
        import mlx.core as mx

        self.bank = (mx.array(W), mx.array(b))

    def _scores(self, source):
        import mlx.core as mx

        if source == "step":
            hidden = self.last_hidden
        else:
            hidden = self.prefills[source[1]].hidden_last[None]
        W, b = self.bank
        part = _partial_logits(hidden, W, b, self.plan.first_layer, self.plan.end_layer, self.plan.num_layers)
        mx.eval(mx.distributed.all_sum(part, group=self.link.group, stream=mx.cpu))


def follow(lm, link: Link) -> int:
    """A follower's life: run rank 0's operations until it says stop (0) or a peer is lost (1)."""
    import signal

    from mlx_interp.steering.generation import steering_session

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches every rank: rank 0 stops them in order
    try:
        with steering_session(lm, capture_layers=None) as batch:
            Follower(batch, link, lm.shard).run()
    except RuntimeError as exc:
        print(f"rank {link.rank}: stopping: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def write_status(code: int, reason: str) -> None:
    """Tell the launcher (`serve --ranks`) how rank 0 ended: mlx.launch does not pass exit codes on."""
    path = os.environ.get(STATUS_ENV)
    if path:
        try:
            with open(path, "w") as f:
                f.write(f"{code} {reason}\n")
        except OSError:
            pass
