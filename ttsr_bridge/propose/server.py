"""Proposal server: serves a :class:`~ttsr_bridge.propose.protocol.Proposer` to SR.jl over loopback TCP.

Why a server process (see ``julia/TTSRBridge/README.md``): SR.jl mutates populations in
``Threads.@spawn`` tasks or worker processes; a Julia worker that called back into Python through
PythonCall would need the GIL, which the Python thread blocked in ``fit`` holds, so a naive callback
deadlocks. A separate process reached over a socket works for threads and processes alike, and it
lets us batch requests from all populations into one ``propose`` call.

Wire format (``julia/TTSRBridge/PROTOCOL.md``, version :data:`PROTOCOL_VERSION`): newline-delimited
JSON objects, each with ``op`` and a client-chosen integer ``id``; every reply echoes ``id``.
Replies to one connection may come back out of order (they are matched by ``id``).

The server is an asyncio loop that parses requests, queues ``propose`` requests in a bounded
queue, and a batcher task that gathers up to ``max_batch`` requests within ``batch_window_s`` and
runs one ``proposer.propose(batch, rng)`` call on a single worker thread (proposers need not be
thread-safe; the loop keeps reading while the model runs). Malformed input gets an error reply and
never stops the server; a client that disconnects mid-request only loses its own replies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..expr.operators import OperatorSet
from ..expr.tree import Expr
from .protocol import DataStats, ProblemContext, ProposalOutcome, ProposalRequest, report_feedback

__all__ = [
    "MAX_LINE_BYTES",
    "PROTOCOL_VERSION",
    "FeedbackMessage",
    "ModelInfo",
    "ProposalServer",
    "ProposeMessage",
    "ProtocolError",
    "ServerConfig",
    "ServerStats",
    "context_from_message",
    "context_to_message",
    "run_server",
]

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # one request line; longer lines close the connection (cannot resync)


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and batches."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port (printed and written to ``port_file``)
    max_batch: int = 256  # most requests per ``propose`` call
    batch_window_s: float = 0.001  # wait this long after the first request for more
    max_queue: int = 16384  # queued propose requests, all connections together
    max_inflight_per_connection: int = 4096
    ticket_capacity: int = 65536  # recent proposals kept for feedback
    feedback_flush: int = 256  # call ``feedback`` once this many outcomes are pending
    seed: int = 0
    allow_shutdown: bool = True  # honour the ``shutdown`` message
    port_file: str | None = None

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_inflight_per_connection < 1:
            raise ValueError("max_batch, max_queue and max_inflight_per_connection must be >= 1")
        if not (0.0 <= self.batch_window_s <= 1.0):
            raise ValueError("batch_window_s must be within [0, 1] seconds")
        if not (0 <= self.port <= 65535):
            raise ValueError(f"port must be within [0, 65535], got {self.port}")


@dataclass(frozen=True)
class ModelInfo:
    """What the ``hello`` reply says about the model behind the server."""

    name: str
    kind: str  # "onnx", "classic", ...
    path: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "path": self.path}


class ProtocolError(ValueError):
    """A request the server cannot serve; becomes an ``error`` reply with ``code``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# ---- message decoding ------------------------------------------------------------------------


def _field(obj: Mapping[str, Any], name: str, kinds: tuple[type, ...], *, optional: bool = False) -> Any:
    """``obj[name]`` checked against ``kinds`` (bool is never accepted as a number)."""
    if name not in obj or obj[name] is None:
        if optional:
            return None
        raise ProtocolError("bad_request", f"missing field {name!r}")
    value = obj[name]
    numeric = int in kinds or float in kinds
    if isinstance(value, bool) and bool not in kinds:
        raise ProtocolError("bad_request", f"field {name!r} must be {'a number' if numeric else kinds}, got a boolean")
    if not isinstance(value, kinds):
        raise ProtocolError("bad_request", f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _float(obj: Mapping[str, Any], name: str, default: float) -> float:
    """A number field; ``null``/absent means ``default`` (JSON has no NaN/Inf)."""
    value = _field(obj, name, (int, float), optional=True)
    return default if value is None else float(value)


def _int(obj: Mapping[str, Any], name: str, default: int | None = None) -> int:
    value = _field(obj, name, (int,), optional=default is not None)
    return default if value is None else int(value)


def _float_tuple(obj: Mapping[str, Any], name: str, n: int) -> tuple[float, ...]:
    value = _field(obj, name, (list,))
    if len(value) != n:
        raise ProtocolError("bad_request", f"data_stats.{name} must have {n} entries, got {len(value)}")
    out = []
    for v in value:
        if v is None:
            out.append(0.0)  # a non-finite statistic (constant feature, ...) travels as null
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ProtocolError("bad_request", f"data_stats.{name} must hold numbers")
        else:
            out.append(float(v))
    return tuple(out)


def _data_stats_from_message(obj: Any, nfeatures: int) -> DataStats:
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", "data_stats must be an object")
    return DataStats(
        n_samples=_int(obj, "n_samples"),
        y_mean=_float(obj, "y_mean", 0.0),
        y_std=_float(obj, "y_std", 1.0),
        y_min=_float(obj, "y_min", 0.0),
        y_max=_float(obj, "y_max", 0.0),
        x_mean=_float_tuple(obj, "x_mean", nfeatures),
        x_std=_float_tuple(obj, "x_std", nfeatures),
        x_min=_float_tuple(obj, "x_min", nfeatures),
        x_max=_float_tuple(obj, "x_max", nfeatures),
        corr_xy=_float_tuple(obj, "corr_xy", nfeatures),
        monotonic_xy=_float_tuple(obj, "monotonic_xy", nfeatures),
    )


def _names(obj: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = _field(obj, name, (list,))
    if not all(isinstance(v, str) for v in value):
        raise ProtocolError("bad_request", f"{name} must be a list of strings")
    return tuple(value)


def context_from_message(obj: Mapping[str, Any]) -> ProblemContext:
    """Build the search's :class:`ProblemContext` from a ``context`` message."""
    nfeatures = _int(obj, "nfeatures")
    if nfeatures < 1:
        raise ProtocolError("bad_request", "nfeatures must be >= 1")
    maxsize = _int(obj, "maxsize")
    if maxsize < 1:
        raise ProtocolError("bad_request", "maxsize must be >= 1")
    binary, unary = _names(obj, "binary_operators"), _names(obj, "unary_operators")
    try:
        operators = OperatorSet.from_names(binary, unary)
    except (KeyError, ValueError) as e:
        raise ProtocolError("unsupported_operator", str(e.args[0] if e.args else e)) from None
    names: tuple[str, ...] = ()
    if obj.get("variable_names") is not None:
        names = _names(obj, "variable_names")
        if len(names) != nfeatures:
            raise ProtocolError("bad_request", f"variable_names has {len(names)} names for {nfeatures} features")
    stats = None
    if obj.get("data_stats") is not None:
        stats = _data_stats_from_message(obj["data_stats"], nfeatures)
    return ProblemContext(nfeatures=nfeatures, operators=operators, maxsize=maxsize, variable_names=names, data_stats=stats)


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def context_to_message(ctx: ProblemContext, request_id: int) -> dict[str, Any]:
    """The ``context`` message a client sends for ``ctx`` (inverse of :func:`context_from_message`)."""
    binary, unary = ctx.operators.names()
    msg: dict[str, Any] = {
        "op": "context",
        "id": request_id,
        "nfeatures": ctx.nfeatures,
        "binary_operators": list(binary),
        "unary_operators": list(unary),
        "maxsize": ctx.maxsize,
        "variable_names": list(ctx.variable_names) or None,
        "data_stats": None,
    }
    if ctx.data_stats is not None:
        st = dataclasses.asdict(ctx.data_stats)
        msg["data_stats"] = {
            k: ([_json_float(x) for x in v] if isinstance(v, tuple) else (v if k == "n_samples" else _json_float(v)))
            for k, v in st.items()
        }
    return msg


@dataclass(frozen=True)
class ProposeMessage:
    """A decoded ``propose`` request (the parent is still text: parsed later, on the loop)."""

    id: int
    context: int
    parent: str
    loss: float
    cost: float
    curmaxsize: int
    population: int
    iteration: int
    temperature: float

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ProposeMessage:
        parent = _field(obj, "parent", (str,))
        if not parent.strip():
            raise ProtocolError("bad_request", "parent is empty")
        return cls(
            id=_int(obj, "id"),
            context=_int(obj, "context"),
            parent=parent,
            loss=_float(obj, "loss", math.inf),
            cost=_float(obj, "cost", math.inf),
            curmaxsize=_int(obj, "curmaxsize"),
            population=_int(obj, "population", -1),
            iteration=_int(obj, "iteration", -1),
            temperature=_float(obj, "temperature", math.nan),
        )


@dataclass(frozen=True)
class FeedbackMessage:
    """A decoded ``feedback`` message: what happened to the proposal with ``ticket``."""

    ticket: int
    accepted: bool
    child_loss: float
    child_cost: float
    ack: bool

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FeedbackMessage:
        return cls(
            ticket=_int(obj, "ticket"),
            accepted=bool(_field(obj, "accepted", (bool,))),
            child_loss=_float(obj, "child_loss", math.inf),
            child_cost=_float(obj, "child_cost", math.inf),
            ack=bool(_field(obj, "ack", (bool,), optional=True) or False),
        )


# ---- server state ----------------------------------------------------------------------------


@dataclass
class ServerStats:
    """Counters reported by the ``stats`` message and at shutdown."""

    connections: int = 0
    open_connections: int = 0
    requests: int = 0  # all messages
    proposals: int = 0  # propose requests answered with a child
    declined: int = 0  # propose requests the proposer answered with None
    errors: int = 0  # error replies
    batches: int = 0
    batched_requests: int = 0
    max_batch_seen: int = 0
    feedback: int = 0
    feedback_unknown_ticket: int = 0
    dropped_replies: int = 0  # client gone before its reply
    propose_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean_batch"] = self.batched_requests / self.batches if self.batches else 0.0
        return d


class _ContextRegistry:
    """Contexts by handle; identical context messages share one handle (clients may each register)."""

    def __init__(self) -> None:
        self._by_key: dict[str, int] = {}
        self._contexts: dict[int, ProblemContext] = {}

    def register(self, obj: Mapping[str, Any]) -> int:
        ctx = context_from_message(obj)
        body = {k: v for k, v in obj.items() if k not in ("op", "id")}
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        handle = self._by_key.get(key)
        if handle is None:
            handle = len(self._contexts) + 1
            self._by_key[key] = handle
            self._contexts[handle] = ctx
        return handle

    def get(self, handle: int) -> ProblemContext:
        try:
            return self._contexts[handle]
        except KeyError:
            raise ProtocolError("unknown_context", f"unknown context handle {handle}; send a 'context' message first") from None


class _TicketBook:
    """The most recent ``capacity`` proposals by ticket, so feedback can name its request and child."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[int, tuple[ProposalRequest, Expr]] = OrderedDict()
        self._next = 1

    def add(self, request: ProposalRequest, child: Expr) -> int:
        ticket = self._next
        self._next += 1
        self._items[ticket] = (request, child)
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return ticket

    def pop(self, ticket: int) -> tuple[ProposalRequest, Expr] | None:
        return self._items.pop(ticket, None)


class _Connection:
    """One client connection: its writer and how many of its requests are still queued."""

    __slots__ = ("closed", "inflight", "last_propose", "peer", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.inflight = 0
        self.closed = False
        self.last_propose = -math.inf
        self.peer = writer.get_extra_info("peername")

    def send(self, obj: Mapping[str, Any]) -> bool:
        """Write one reply line; False when the client has gone."""
        if self.closed or self.writer.is_closing():
            return False
        try:
            self.writer.write(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n")
        except (ConnectionError, RuntimeError):
            self.closed = True
            return False
        return True


@dataclass
class _Pending:
    conn: _Connection
    msg: ProposeMessage
    request: ProposalRequest
    t0: float = field(default_factory=time.perf_counter)


def _error(request_id: Any, code: str, message: str) -> dict[str, Any]:
    rid = request_id if isinstance(request_id, int) and not isinstance(request_id, bool) else None
    return {"op": "error", "id": rid, "ok": False, "code": code, "error": message}


class ProposalServer:
    """The asyncio proposal server around one proposer. Use :meth:`start` / :meth:`stop` inside a
    running loop, or :func:`run_server` to run it in the foreground."""

    def __init__(self, proposer: Any, config: ServerConfig = ServerConfig(), model: ModelInfo | None = None):
        if not callable(getattr(proposer, "propose", None)):
            raise TypeError(f"{type(proposer).__name__} has no propose(requests, rng) method")
        self.proposer = proposer
        self.config = config
        self.model = model or ModelInfo(name=type(proposer).__name__, kind="python")
        self.stats = ServerStats()
        self._contexts = _ContextRegistry()
        self._tickets = _TicketBook(config.ticket_capacity)
        self._rng = np.random.default_rng(config.seed)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._feedback: list[ProposalOutcome] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttsr-propose")
        self._server: asyncio.base_events.Server | None = None
        self._batcher: asyncio.Task | None = None
        self._handlers: set[asyncio.Task] = set()
        self._connections: set[_Connection] = set()
        self._stopping: asyncio.Event | None = None
        self.address: tuple[str, int] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Listen and start the batcher; returns the bound ``(host, port)``."""
        self._queue = asyncio.Queue(maxsize=self.config.max_queue)
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(
            self._handle_connection, self.config.host, self.config.port, limit=MAX_LINE_BYTES
        )
        sock = self._server.sockets[0]
        host, port = sock.getsockname()[:2]
        self.address = (host, port)
        self._batcher = asyncio.get_running_loop().create_task(self._batch_loop())
        if self.config.port_file:
            _write_port_file(Path(self.config.port_file), port)
        return self.address

    def request_stop(self) -> None:
        """Ask :meth:`wait_stopped` to return (signal handlers, the ``shutdown`` message)."""
        if self._stopping is not None:
            self._stopping.set()

    async def wait_stopped(self) -> None:
        assert self._stopping is not None, "start() first"
        await self._stopping.wait()

    async def stop(self) -> None:
        """Stop listening, answer queued requests with ``shutting_down``, close every connection."""
        if self._server is not None:
            self._server.close()
        if self._batcher is not None:
            self._batcher.cancel()
            try:
                await self._batcher
            except (asyncio.CancelledError, Exception):
                pass
        if self._queue is not None:
            while not self._queue.empty():
                p = self._queue.get_nowait()
                p.conn.send(_error(p.msg.id, "shutting_down", "the server is shutting down"))
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._flush_feedback_sync)
        self._executor.shutdown(wait=True)
        if self.config.port_file:
            try:
                Path(self.config.port_file).unlink()
            except OSError:
                pass

    # ---- connections -----------------------------------------------------------------------
    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = _Connection(writer)
        self._connections.add(conn)
        self.stats.connections += 1
        self.stats.open_connections += 1
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    break  # client closed (possibly mid-line): nothing to answer
                except asyncio.LimitOverrunError:
                    conn.send(_error(None, "line_too_long", f"request line longer than {MAX_LINE_BYTES} bytes"))
                    self.stats.errors += 1
                    break
                if line.strip():
                    self._dispatch(conn, line)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            conn.closed = True
            self._connections.discard(conn)
            self.stats.open_connections -= 1
            self._handlers.discard(task)
            try:
                writer.close()
            except Exception:  # the transport may already be gone
                pass

    def _dispatch(self, conn: _Connection, line: bytes) -> None:
        """Decode one line and answer it (or queue it); every failure becomes an error reply."""
        self.stats.requests += 1
        request_id: Any = None
        try:
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ProtocolError("bad_json", f"not valid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise ProtocolError("bad_request", "a message must be a JSON object")
            request_id = obj.get("id")
            op = obj.get("op")
            handler = self._HANDLERS.get(op) if isinstance(op, str) else None
            if handler is None:
                raise ProtocolError("unknown_op", f"unknown op {op!r}; known: {sorted(self._HANDLERS)}")
            reply = handler(self, conn, obj)
            if reply is not None:
                conn.send(reply)
        except ProtocolError as e:
            self.stats.errors += 1
            conn.send(_error(request_id, e.code, str(e)))
        except Exception as e:  # a bug must cost one reply, never the server
            log.exception("internal error while handling a request")
            self.stats.errors += 1
            conn.send(_error(request_id, "internal", f"{type(e).__name__}: {e}"))

    def _on_hello(self, conn: _Connection, obj: Mapping[str, Any]) -> dict[str, Any]:
        version = _int(obj, "protocol")
        if version != PROTOCOL_VERSION:
            raise ProtocolError("protocol_mismatch", f"server speaks protocol {PROTOCOL_VERSION}, client {version}")
        from .. import __version__

        return {
            "op": "hello",
            "id": obj.get("id"),
            "ok": True,
            "protocol": PROTOCOL_VERSION,
            "server": f"ttsr_bridge {__version__}",
            "model": self.model.to_json(),
            "max_batch": self.config.max_batch,
        }

    def _on_context(self, conn: _Connection, obj: Mapping[str, Any]) -> dict[str, Any]:
        handle = self._contexts.register(obj)
        return {"op": "context", "id": obj.get("id"), "ok": True, "context": handle}

    def _on_propose(self, conn: _Connection, obj: Mapping[str, Any]) -> None:
        from ..expr.parser import parse_tree

        msg = ProposeMessage.from_json(obj)
        ctx = self._contexts.get(msg.context)
        try:
            parent = parse_tree(msg.parent)
        except ValueError as e:
            raise ProtocolError("bad_tree", f"cannot parse parent: {e}") from None
        if parent.features_used() and max(parent.features_used()) >= ctx.nfeatures:
            raise ProtocolError("bad_tree", f"parent uses a feature beyond nfeatures={ctx.nfeatures}")
        request = ProposalRequest(
            parent=parent,
            parent_loss=msg.loss,
            parent_cost=msg.cost,
            population=msg.population,
            iteration=msg.iteration,
            temperature=msg.temperature,
            curmaxsize=msg.curmaxsize,
            context=ctx,
        )
        if conn.inflight >= self.config.max_inflight_per_connection:
            raise ProtocolError("overloaded", "too many requests in flight on this connection")
        assert self._queue is not None
        try:
            self._queue.put_nowait(_Pending(conn, msg, request))
        except asyncio.QueueFull:
            raise ProtocolError("overloaded", "the server queue is full; retry later") from None
        conn.inflight += 1
        conn.last_propose = time.perf_counter()

    def _on_feedback(self, conn: _Connection, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        msg = FeedbackMessage.from_json(obj)
        entry = self._tickets.pop(msg.ticket)
        if entry is None:
            self.stats.feedback_unknown_ticket += 1
            if msg.ack:
                raise ProtocolError("unknown_ticket", f"ticket {msg.ticket} is unknown or too old")
            return None
        request, child = entry
        self._feedback.append(
            ProposalOutcome(request=request, child=child, accepted=msg.accepted, child_loss=msg.child_loss, child_cost=msg.child_cost)
        )
        self.stats.feedback += 1
        return {"op": "feedback", "id": obj.get("id"), "ok": True} if msg.ack else None

    def _on_stats(self, conn: _Connection, obj: Mapping[str, Any]) -> dict[str, Any]:
        return {"op": "stats", "id": obj.get("id"), "ok": True, "stats": self.stats.to_json()}

    def _on_ping(self, conn: _Connection, obj: Mapping[str, Any]) -> dict[str, Any]:
        return {"op": "ping", "id": obj.get("id"), "ok": True}

    def _on_shutdown(self, conn: _Connection, obj: Mapping[str, Any]) -> dict[str, Any]:
        if not self.config.allow_shutdown:
            raise ProtocolError("forbidden", "this server does not accept 'shutdown'")
        self.request_stop()
        return {"op": "shutdown", "id": obj.get("id"), "ok": True}

    _HANDLERS = {
        "hello": _on_hello,
        "context": _on_context,
        "propose": _on_propose,
        "feedback": _on_feedback,
        "stats": _on_stats,
        "ping": _on_ping,
        "shutdown": _on_shutdown,
    }

    # ---- batching --------------------------------------------------------------------------
    def _expected_batch(self) -> int:
        """How many requests a batch can hope for: connections that proposed within the last
        second (a TTSRBridge.jl connection has at most one request in flight), so a lone client
        never waits for the batch window."""
        recent = time.perf_counter() - 1.0
        active = sum(1 for c in self._connections if c.last_propose >= recent)
        return max(1, min(self.config.max_batch, active))

    async def _collect_batch(self) -> list[_Pending]:
        """Wait for one request, then gather more for up to ``batch_window_s`` or until every
        active connection has a request in the batch."""
        assert self._queue is not None
        first = await self._queue.get()
        batch = [first]
        deadline = time.perf_counter() + self.config.batch_window_s
        expected = self._expected_batch()
        while len(batch) < self.config.max_batch:
            if len(batch) >= expected and self._queue.empty():
                break
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout=left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _batch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect_batch()
            live = [p for p in batch if not p.conn.closed]
            for p in batch:
                p.conn.inflight -= 1
            self.stats.dropped_replies += len(batch) - len(live)
            if not live:
                continue
            t0 = time.perf_counter()
            try:
                children = await loop.run_in_executor(self._executor, self._propose_sync, [p.request for p in live])
                error = None
            except Exception as e:  # the proposer failed: every request of the batch gets the error
                log.exception("proposer failed on a batch of %d", len(live))
                children, error = [None] * len(live), f"{type(e).__name__}: {e}"
            self.stats.propose_seconds += time.perf_counter() - t0
            self.stats.batches += 1
            self.stats.batched_requests += len(live)
            self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(live))
            for p, child in zip(live, children):
                self._reply_proposal(p, child, error)
            if len(self._feedback) >= self.config.feedback_flush or (self._queue is not None and self._queue.empty() and self._feedback):
                await loop.run_in_executor(self._executor, self._flush_feedback_sync)

    def _propose_sync(self, requests: list[ProposalRequest]) -> list[Expr | None]:
        out = list(self.proposer.propose(requests, self._rng))
        if len(out) != len(requests):
            raise RuntimeError(f"proposer returned {len(out)} children for {len(requests)} requests")
        return out

    def _flush_feedback_sync(self) -> None:
        pending, self._feedback = self._feedback, []
        if pending:
            try:
                report_feedback(self.proposer, pending)
            except Exception:
                log.exception("proposer feedback failed")

    def _reply_proposal(self, p: _Pending, child: Expr | None, error: str | None) -> None:
        from ..expr.printer import string_tree

        if error is not None:
            self.stats.errors += 1
            reply = _error(p.msg.id, "proposer_error", error)
        elif child is None or not isinstance(child, Expr) or not child.is_valid():
            self.stats.declined += 1
            reply = {"op": "propose", "id": p.msg.id, "ok": True, "child": None, "ticket": None}
        else:
            ticket = self._tickets.add(p.request, child)
            self.stats.proposals += 1
            reply = {"op": "propose", "id": p.msg.id, "ok": True, "child": string_tree(child), "ticket": ticket}
        if not p.conn.send(reply):
            self.stats.dropped_replies += 1


def _write_port_file(path: Path, port: int) -> None:
    """Write the port atomically (a reader never sees a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def run_server(proposer: Any, config: ServerConfig, model: ModelInfo | None = None, *, announce: bool = True) -> ServerStats:
    """Serve ``proposer`` until SIGTERM/SIGINT or a ``shutdown`` message; returns the final stats."""

    async def main() -> ServerStats:
        server = ProposalServer(proposer, config, model)
        host, port = await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, server.request_stop)
            except (NotImplementedError, RuntimeError):  # not the main thread / platform without signals
                pass
        if announce:
            # One parseable line on stdout: whoever started us learns the port from it.
            print(f"ttsr serve: listening on {host}:{port} protocol={PROTOCOL_VERSION} model={server.model.name}", flush=True)
        await server.wait_stopped()
        await server.stop()
        return server.stats

    return asyncio.run(main())
