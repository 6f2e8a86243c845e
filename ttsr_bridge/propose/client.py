"""Python client of the proposal server, speaking the wire protocol exactly as TTSRBridge.jl does.

:class:`ProposalClient` is one blocking connection (``hello`` on connect, then ``context``,
``propose``, ``feedback``, ``stats``, ``shutdown``); replies are matched by ``id``.
:class:`ServerProcess` starts ``ttsr serve`` as a child process on a free loopback port and stops
it (SIGTERM, then SIGKILL); :class:`~ttsr_bridge.pysr.regressor.PySRRegressor` wraps ``fit`` in it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .protocol import ProblemContext
from .server import PROTOCOL_VERSION, context_to_message

__all__ = ["HelloInfo", "Proposal", "ProposalClient", "ServerError", "ServerProcess"]


class ServerError(RuntimeError):
    """An ``error`` reply from the server (``code`` as in PROTOCOL.md) or a broken connection."""

    def __init__(self, code: str, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code


@dataclass(frozen=True)
class HelloInfo:
    protocol: int
    server: str
    model_name: str
    model_kind: str
    max_batch: int


@dataclass(frozen=True)
class Proposal:
    """A ``propose`` reply: the child in SR.jl ``string_tree`` form (None: declined) and its ticket."""

    child: str | None
    ticket: int | None


def _num(v: float) -> float | None:
    # JSON has no NaN/Inf; the protocol sends null and the server substitutes its default.
    return float(v) if math.isfinite(v) else None


class ProposalClient:
    """One blocking connection to a proposal server. Not thread-safe: use one per thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0, client_name: str = "ttsr_bridge.client"):
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._file = self._sock.makefile("rb")
        self._next_id = 0
        self.hello = self._hello(client_name)

    # ---- plumbing --------------------------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, obj: Mapping[str, Any]) -> None:
        """Write one message line (no reply awaited)."""
        self._sock.sendall(json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        """Write raw bytes (tests of malformed input)."""
        self._sock.sendall(data)

    def read_reply(self) -> dict[str, Any]:
        """The next reply line as an object."""
        line = self._file.readline()
        if not line:
            raise ServerError("closed", "the server closed the connection")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ServerError("bad_reply", f"reply is not an object: {line[:200]!r}")
        return obj

    def call(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Send ``obj`` with a fresh id and return the reply with that id (error replies raise)."""
        rid = self._new_id()
        obj = {**obj, "id": rid}
        self.send(obj)
        reply = self.read_reply()
        if reply.get("id") != rid:
            raise ServerError("desync", f"expected the reply to id {rid}, got {reply.get('id')!r}")
        if not reply.get("ok", False):
            raise ServerError(str(reply.get("code", "error")), str(reply.get("error", "")))
        return reply

    # ---- messages --------------------------------------------------------------------------
    def _hello(self, client_name: str) -> HelloInfo:
        r = self.call({"op": "hello", "protocol": PROTOCOL_VERSION, "client": client_name})
        model = r.get("model") or {}
        return HelloInfo(int(r["protocol"]), str(r["server"]), str(model.get("name", "")), str(model.get("kind", "")), int(r["max_batch"]))

    def register_context(self, ctx: ProblemContext) -> int:
        """Send ``ctx``; returns the server's context handle."""
        msg = context_to_message(ctx, 0)
        del msg["id"]
        return int(self.call(msg)["context"])

    def propose_message(self, context: int, parent: str, *, loss: float, cost: float, curmaxsize: int,
                        population: int = -1, iteration: int = -1, temperature: float = math.nan) -> dict[str, Any]:
        """The ``propose`` message body (without id), as the Julia client writes it."""
        return {
            "op": "propose",
            "context": context,
            "parent": parent,
            "loss": _num(loss),
            "cost": _num(cost),
            "curmaxsize": curmaxsize,
            "population": population,
            "iteration": iteration,
            "temperature": _num(temperature),
        }

    def propose(self, context: int, parent: str, *, loss: float, cost: float, curmaxsize: int, **kw: Any) -> Proposal:
        r = self.call(self.propose_message(context, parent, loss=loss, cost=cost, curmaxsize=curmaxsize, **kw))
        return Proposal(r.get("child"), r.get("ticket"))

    def propose_many(self, context: int, parents: Sequence[str], *, loss: float, cost: float, curmaxsize: int) -> list[Proposal]:
        """Pipeline ``len(parents)`` requests on this connection and collect replies by id."""
        ids = []
        for parent in parents:
            rid = self._new_id()
            ids.append(rid)
            self.send({**self.propose_message(context, parent, loss=loss, cost=cost, curmaxsize=curmaxsize), "id": rid})
        by_id: dict[int, Proposal] = {}
        while len(by_id) < len(ids):
            r = self.read_reply()
            if not r.get("ok", False):
                raise ServerError(str(r.get("code")), str(r.get("error")))
            by_id[int(r["id"])] = Proposal(r.get("child"), r.get("ticket"))
        return [by_id[i] for i in ids]

    def feedback(self, ticket: int, *, accepted: bool, child_loss: float, child_cost: float, ack: bool = False) -> None:
        msg = {"op": "feedback", "ticket": ticket, "accepted": accepted, "child_loss": _num(child_loss), "child_cost": _num(child_cost)}
        if ack:
            self.call({**msg, "ack": True})
        else:
            self.send({**msg, "id": self._new_id()})

    def stats(self) -> dict[str, Any]:
        return dict(self.call({"op": "stats"})["stats"])

    def shutdown(self) -> None:
        self.call({"op": "shutdown"})

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> ProposalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerProcess:
    """``ttsr serve`` in a child process on a free loopback port.

    ``with ServerProcess("default") as srv: ... srv.port ...``; the server is stopped with SIGTERM
    (a graceful shutdown) and killed if it does not exit within ``stop_timeout`` seconds.
    """

    def __init__(self, model: str = "default", *, host: str = "127.0.0.1", seed: int = 0,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0, extra_args: Sequence[str] = ()):
        self.model = model
        self.host = host
        self.seed = seed
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.log_path: str | None = None

    def command(self, port_file: str) -> list[str]:
        return [sys.executable, "-m", "ttsr_bridge.cli", "serve", "--model", self.model, "--host", self.host,
                "--port", "0", "--port-file", port_file, "--seed", str(self.seed), *self.extra_args]

    def start(self) -> ServerProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="ttsr-serve-")
        port_file = os.path.join(self._tmp.name, "port")
        # stderr goes to a file, not a pipe: a chatty server must never block on a full pipe.
        self.log_path = os.path.join(self._tmp.name, "serve.log")
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(self.command(port_file), stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = Path(self.log_path).read_text(errors="replace")
                status = self._proc.returncode
                self.stop()
                raise RuntimeError(f"ttsr serve exited with status {status}: {err[-2000:]}")
            text = Path(port_file).read_text().strip() if os.path.exists(port_file) else ""
            if text:
                self.port = int(text)
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"ttsr serve did not report a port within {self.start_timeout} s")

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        proc, self._proc = self._proc, None
        status = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            status = proc.returncode
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return status

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
