"""The proposal server, driven by a Python client that speaks the wire protocol as TTSRBridge.jl does."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.expr.parser import parse_tree
from ttsr_bridge.propose.client import ProposalClient, ServerError, ServerProcess
from ttsr_bridge.propose.protocol import DataStats, ProblemContext
from ttsr_bridge.propose.server import (
    PROTOCOL_VERSION,
    ProposalServer,
    ServerConfig,
    context_from_message,
    context_to_message,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.propose.test_server_proposers import FailingProposer, ScalingProposer


class ThreadedServer:
    """A ProposalServer on its own event loop in a background thread."""

    def __init__(self, proposer, config: ServerConfig = ServerConfig()):
        self.server = ProposalServer(proposer, config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        self.host, self.port = self.server.address

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def main():
            await self.server.start()
            self._ready.set()
            await self.server.wait_stopped()
            await self.server.stop()

        self.loop.run_until_complete(main())

    def stop(self):
        self.loop.call_soon_threadsafe(self.server.request_stop)
        self._thread.join(10)
        assert not self._thread.is_alive()

    def client(self, **kw) -> ProposalClient:
        return ProposalClient(self.host, self.port, **kw)


def _context(nfeatures: int = 3) -> ProblemContext:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, nfeatures))
    y = X[:, 0] * 2.0 + np.sin(X[:, 1 % nfeatures])
    return ProblemContext(
        nfeatures=nfeatures,
        operators=OperatorSet.from_names(["+", "-", "*", "/", "^"], ["sin", "exp", "log", "neg"]),
        maxsize=20,
        data_stats=DataStats.from_data(X, y),
    )


@pytest.fixture
def scaling():
    proposer = ScalingProposer()
    srv = ThreadedServer(proposer)
    yield srv, proposer
    srv.stop()


def test_hello_context_propose_feedback(scaling):
    srv, proposer = scaling
    with srv.client() as c:
        assert c.hello.protocol == PROTOCOL_VERSION
        assert c.hello.model_name == "ScalingProposer"
        handle = c.register_context(_context())
        assert c.register_context(_context()) == handle  # same content, same handle
        p = c.propose(handle, "((x1 * 2.5) + sin(x2))", loss=0.3, cost=0.31, curmaxsize=20)
        assert parse_tree(p.child) == parse_tree("((x1 * 3.75) + sin(x2))")
        assert p.ticket is not None
        c.feedback(p.ticket, accepted=True, child_loss=0.1, child_cost=0.12, ack=True)
        declined = c.propose(handle, "x1", loss=1.0, cost=1.0, curmaxsize=2)
        assert declined.child is None and declined.ticket is None
        stats = c.stats()
    assert stats["proposals"] == 1 and stats["declined"] == 1 and stats["feedback"] == 1
    deadline = time.time() + 5
    while not proposer.outcomes and time.time() < deadline:
        time.sleep(0.01)
    [outcome] = proposer.outcomes
    assert outcome.accepted and outcome.child_loss == 0.1
    assert outcome.request.parent == parse_tree("((x1 * 2.5) + sin(x2))")
    assert outcome.request.context.data_stats is not None


def test_context_message_round_trip():
    ctx = _context()
    back = context_from_message(json.loads(json.dumps(context_to_message(ctx, 1))))
    assert back.operators == ctx.operators and back.nfeatures == ctx.nfeatures
    assert back.data_stats == ctx.data_stats


def test_many_concurrent_clients_no_lost_or_mixed_replies(scaling):
    """16 clients x 640 pipelined requests, each with a distinct constant: every reply must be the
    scaled constant of its own request."""
    srv, proposer = scaling
    n_clients, per_client = 16, 640
    with srv.client() as c0:
        handle = c0.register_context(_context())

    def worker(k: int) -> int:
        rng = np.random.default_rng(k)
        consts = rng.uniform(1, 100, size=per_client)
        with srv.client() as c:
            ok = 0
            for chunk in np.array_split(consts, 8):
                parents = [f"(x{1 + k % 3} * {float(v)!r})" for v in chunk]
                replies = c.propose_many(handle, parents, loss=1.0, cost=1.0, curmaxsize=20)
                for v, r in zip(chunk, replies):
                    child = parse_tree(r.child)
                    assert child.vals[child.constant_indices()[0]] == pytest.approx(v * 1.5, rel=1e-15)
                    assert child.features_used() == {k % 3}
                    ok += 1
            return ok

    with ThreadPoolExecutor(n_clients) as pool:
        counts = list(pool.map(worker, range(n_clients)))
    assert sum(counts) == n_clients * per_client >= 10_000
    assert max(proposer.batch_sizes) > 1  # requests from several clients were batched


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"this is not json\n", "bad_json"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b'{"op": "teleport", "id": 5}\n', "unknown_op"),
        (b'{"op": "propose", "id": 6, "context": 999, "parent": "x1", "curmaxsize": 5}\n', "unknown_context"),
        (b'{"op": "propose", "id": 7, "context": 1, "curmaxsize": 5}\n', "bad_request"),
        (b'{"op": "propose", "id": 8, "context": 1, "parent": "((x1 +", "curmaxsize": 5}\n', "bad_tree"),
        (b'{"op": "propose", "id": 9, "context": 1, "parent": "x9", "curmaxsize": 5}\n', "bad_tree"),
        (b'{"op": "propose", "id": 10, "context": 1, "parent": "x1", "curmaxsize": "big"}\n', "bad_request"),
        (b'{"op": "hello", "id": 11, "protocol": 99}\n', "protocol_mismatch"),
        (b'{"op": "context", "id": 12, "nfeatures": 2, "maxsize": 5, "binary_operators": ["frobnicate"], "unary_operators": []}\n', "unsupported_operator"),
        (b'{"op": "feedback", "id": 13, "ticket": 123456, "accepted": true, "ack": true}\n', "unknown_ticket"),
        (b'\xff\xfe\n', "bad_json"),
    ],
)
def test_malformed_requests_get_error_replies(scaling, payload, code):
    srv, _ = scaling
    with srv.client() as c:
        assert c.register_context(_context()) == 1
        c.send_raw(payload)
        reply = c.read_reply()
        assert reply["ok"] is False and reply["code"] == code, reply
        # the connection and the server still work
        assert c.propose(1, "(x1 + 1.0)", loss=1.0, cost=1.0, curmaxsize=9).child is not None


def test_overlong_line_closes_only_that_connection(scaling):
    srv, _ = scaling
    with srv.client() as bad, srv.client() as good:
        handle = good.register_context(_context())
        bad.send_raw(b"x" * (1 << 21))
        assert bad.read_reply()["code"] == "line_too_long"
        assert good.propose(handle, "(x1 + 1.0)", loss=1.0, cost=1.0, curmaxsize=9).child is not None


def test_client_disconnecting_mid_request_is_harmless(scaling):
    srv, _ = scaling
    with srv.client() as c:
        handle = c.register_context(_context())
    for _ in range(20):
        s = socket.create_connection((srv.host, srv.port))
        msg = {"op": "propose", "id": 1, "context": handle, "parent": "(x1 * 3.0)", "curmaxsize": 9}
        s.sendall(json.dumps(msg).encode() + b"\n" + b'{"op": "propose", "id": 2, "par')  # half a line
        s.close()
    with srv.client() as c:
        assert c.propose(handle, "(x1 * 3.0)", loss=1.0, cost=1.0, curmaxsize=9).child is not None
        stats = c.stats()
    assert stats["open_connections"] == 1


def test_proposer_failure_is_an_error_reply_not_a_crash():
    srv = ThreadedServer(FailingProposer())
    try:
        with srv.client() as c:
            handle = c.register_context(_context())
            with pytest.raises(ServerError) as e:
                c.propose(handle, "x1", loss=1.0, cost=1.0, curmaxsize=5)
            assert e.value.code == "proposer_error"
            assert c.stats()["errors"] == 1
    finally:
        srv.stop()


def test_shutdown_message_and_bounded_queue():
    srv = ThreadedServer(ScalingProposer(), ServerConfig(max_inflight_per_connection=2, batch_window_s=0.05))
    with srv.client() as c:
        handle = c.register_context(_context())
        msg = c.propose_message(handle, "(x1 * 2.0)", loss=1.0, cost=1.0, curmaxsize=9)
        for i in range(50):
            c.send({**msg, "id": 1000 + i})
        replies = [c.read_reply() for _ in range(50)]
        assert any(r.get("code") == "overloaded" for r in replies)
        assert sum(1 for r in replies if r.get("ok")) >= 2
        c.shutdown()
    srv._thread.join(10)
    assert not srv._thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection((srv.host, srv.port), timeout=1).close()


def test_ttsr_serve_subprocess_port_file_and_sigterm():
    repo = Path(__file__).resolve().parents[2]
    srv = ServerProcess("tests.propose.test_server_proposers:make_scaling", start_timeout=60)
    import os

    old = os.getcwd()
    os.chdir(repo)  # the factory module is importable from the repository root
    try:
        srv.start()
    finally:
        os.chdir(old)
    try:
        with ProposalClient("127.0.0.1", srv.port) as c:
            assert c.hello.model_kind == "python"
            handle = c.register_context(_context())
            assert parse_tree(c.propose(handle, "(x2 - 4.0)", loss=1.0, cost=1.0, curmaxsize=9).child) == parse_tree("(x2 - 6.0)")
    finally:
        status = srv.stop()
    assert status == 0  # SIGTERM is a graceful shutdown
