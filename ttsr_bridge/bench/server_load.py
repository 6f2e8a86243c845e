"""Load test of the proposal server: throughput and latency as SR.jl's threads would see them.

``python -m ttsr_bridge.bench.server_load --json`` starts ``ttsr serve`` in a child process (the
production layout), opens ``--clients`` connections (one per simulated SR.jl thread; each sends
one ``propose`` at a time and waits for its reply, exactly as TTSRBridge.jl does), and reports
requests/s, p50/p99 round-trip latency and the server's batching. The default model is a cheap
real move (:class:`ConstantJitterProposer`) so the figure is the bridge's overhead, not a model's.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..expr.operators import OperatorSet
from ..expr.tree import Expr
from ..propose.protocol import DataStats, ProblemContext, ProposalRequest

__all__ = ["ConstantJitterProposer", "LoadResult", "make_load_proposer", "run_load"]

_PARENTS = (
    "(x1 * 2.5) + sin(x2)",
    "((x1 - 0.75) * (x2 + 1.25)) / x3",
    "exp(x1 * -0.5) + (x2 * x3)",
    "sin((x1 * 3.0) + 0.1) * x2",
)


class ConstantJitterProposer:
    """Multiplies every constant by ``exp(N(0, 0.1))`` (a real constant mutation); trees without
    constants are declined."""

    def propose(self, requests: Sequence[ProposalRequest], rng: np.random.Generator) -> list[Expr | None]:
        out: list[Expr | None] = []
        for r in requests:
            p = r.parent
            if not p.constant_indices():
                out.append(None)
                continue
            vals = [v * float(np.exp(rng.normal(0.0, 0.1))) if c == 0 else v for c, v in zip(p.codes, p.vals)]
            out.append(Expr(p.codes, vals))
        return out


def make_load_proposer() -> ConstantJitterProposer:
    return ConstantJitterProposer()


@dataclass(frozen=True)
class LoadResult:
    model: str
    clients: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_batches: int
    server_mean_batch: float
    server_max_batch: int


def _context() -> ProblemContext:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X[:, 0] * 2.5 + np.sin(X[:, 1])
    return ProblemContext(3, OperatorSet.from_names(["+", "-", "*", "/"], ["sin", "exp"]), 30, data_stats=DataStats.from_data(X, y))


def _client_loop(port: int, handle: int, n: int, latencies: list[float], errors: list[int], start: threading.Barrier) -> None:
    from ..propose.client import ProposalClient, ServerError

    with ProposalClient("127.0.0.1", port, timeout=30.0) as c:
        start.wait()
        for i in range(n):
            t0 = time.perf_counter()
            try:
                c.propose(handle, _PARENTS[i % len(_PARENTS)], loss=0.5, cost=0.51, curmaxsize=30)
            except ServerError:
                errors.append(1)
            latencies.append(time.perf_counter() - t0)


def run_load(model: str, clients: int, requests_per_client: int, batch_window_ms: float = 1.0) -> LoadResult:
    """Start ``ttsr serve --model model`` and drive it with ``clients`` concurrent connections."""
    from ..propose.client import ProposalClient, ServerProcess

    with ServerProcess(model, extra_args=("--batch-window-ms", str(batch_window_ms))) as server:
        assert server.port is not None
        with ProposalClient("127.0.0.1", server.port) as c0:
            handle = c0.register_context(_context())
            per_thread: list[list[float]] = [[] for _ in range(clients)]
            errors: list[int] = []
            start = threading.Barrier(clients + 1)
            threads = [
                threading.Thread(target=_client_loop, args=(server.port, handle, requests_per_client, per_thread[k], errors, start))
                for k in range(clients)
            ]
            for t in threads:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join()
            seconds = time.perf_counter() - t0
            stats = c0.stats()
    lat_ms = np.array([x for lst in per_thread for x in lst]) * 1e3
    n = int(lat_ms.size)
    return LoadResult(
        model=model,
        clients=clients,
        requests=n,
        errors=len(errors),
        seconds=seconds,
        requests_per_s=n / seconds if seconds > 0 else 0.0,
        p50_ms=float(np.percentile(lat_ms, 50)),
        p90_ms=float(np.percentile(lat_ms, 90)),
        p99_ms=float(np.percentile(lat_ms, 99)),
        max_ms=float(lat_ms.max()),
        server_batches=int(stats["batches"]),
        server_mean_batch=float(stats["mean_batch"]),
        server_max_batch=int(stats["max_batch_seen"]),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ttsr_bridge.bench.server_load", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ttsr_bridge.bench.server_load:make_load_proposer",
                        help="what `ttsr serve --model` loads (default: a cheap constant-jitter move)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=640, help="requests per client")
    parser.add_argument("--batch-window-ms", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    result = run_load(args.model, args.clients, args.requests, args.batch_window_ms)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        for k, v in asdict(result).items():
            print(f"{k:>18}: {v:.3f}" if isinstance(v, float) else f"{k:>18}: {v}")
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
