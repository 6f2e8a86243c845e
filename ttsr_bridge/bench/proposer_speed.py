"""Throughput of the neural proposer as the engine uses it.

``python -m ttsr_bridge.bench.proposer_speed --model PATH|default --json`` prints one JSON line:
``proposals_per_s`` (children per second, ``--requests`` requests per call, one per
population, ``--threads`` proposer threads: the batch is split in that many parts decoded in
parallel), ``weights`` (``fp32`` / ``int8``, from the export), ``well_formed_rate`` (children that are valid
trees within ``curmaxsize``), ``none_rate``, ``mean_child_size``, ``model_calls_per_call``,
``cpu_ms_per_proposal`` (process CPU time per child: with ``--threads 2`` on a busy machine
the wall figure says little, this one still compares runs) and ``evals_per_s_classic`` — loss
evaluations per second of the engine's evaluator on the same children (``n_points`` rows),
i.e. the pace of a classic search step, for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["SpeedResult", "main", "measure"]


@dataclass(frozen=True)
class SpeedResult:
    model: str
    proposals_per_s: float
    well_formed_rate: float
    none_rate: float
    mean_child_size: float
    evals_per_s_classic: float | None
    requests_per_call: int
    calls: int
    seconds: float
    threads: int
    weights: str
    model_calls_per_call: float
    maxsize: int
    cpu_ms_per_proposal: float


def _requests(rng: np.random.Generator, n: int, maxsize: int, nfeatures: int, n_points: int):
    from ..expr.operators import OperatorSet
    from ..model.synthetic_data import random_tree
    from ..propose.protocol import DataStats, ProblemContext, ProposalRequest

    ops = OperatorSet.from_names(["+", "-", "*", "/"], ["sin", "cos", "exp", "log"])
    X = rng.uniform(-2, 2, size=(n_points, nfeatures))
    y = np.sin(X[:, 0]) * X[:, -1] + 0.5 * X[:, 0] ** 2
    ctx = ProblemContext(nfeatures, ops, maxsize, tuple(f"x{i + 1}" for i in range(nfeatures)), DataStats.from_data(X, y))
    reqs = [
        ProposalRequest(random_tree(rng, int(rng.integers(1, maxsize - 5)), nfeatures, ops), float(rng.uniform(0, 1)),
                        0.0, p, int(rng.integers(1, 40)), float(rng.uniform(0, 1)), maxsize, ctx)
        for p in range(n)
    ]
    return reqs, X, y


def _classic_evals_per_s(children, X: np.ndarray, y: np.ndarray) -> float | None:
    try:
        from ..expr.evaluate import EvalData, loss_batch
    except ImportError:  # evaluator not built in this checkout
        return None
    data = EvalData(X, y)
    loss_batch(children, data)  # compile / warm up
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.5:
        loss_batch(children, data)
        n += len(children)
    return n / (time.perf_counter() - t0)


def measure(model: str, *, requests: int = 31, seconds: float = 5.0, threads: int = 2, maxsize: int = 30,
            nfeatures: int = 3, n_points: int = 100, seed: int = 0, top_k: int | None = None) -> SpeedResult:
    """Run the proposer repeatedly for ``seconds`` on synthetic engine-like requests."""
    from ..propose.onnx_proposer import OnnxProposer

    rng = np.random.default_rng(seed)
    proposer = OnnxProposer(model, threads=threads, batch_size=max(64, requests), top_k=top_k)
    reqs, X, y = _requests(rng, requests, maxsize, nfeatures, n_points)
    proposer.propose(reqs, rng)  # warm-up (session allocations)
    calls0 = proposer.stats.model_calls
    children, n_calls = [], 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or n_calls == 0:
        children += proposer.propose(reqs, rng)
        n_calls += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    valid = [c for c, r in zip(children, reqs * n_calls) if c is not None and c.is_valid() and len(c) <= r.curmaxsize]
    return SpeedResult(
        model=str(proposer.path), proposals_per_s=len(children) / elapsed,
        well_formed_rate=len(valid) / len(children), none_rate=sum(c is None for c in children) / len(children),
        mean_child_size=float(np.mean([len(c) for c in valid])) if valid else 0.0,
        evals_per_s_classic=_classic_evals_per_s(valid[: 4 * requests] or [reqs[0].parent], X, y),
        requests_per_call=requests, calls=n_calls, seconds=elapsed, threads=threads,
        weights=str(proposer.sidecar.get("weights", "fp32")),
        model_calls_per_call=(proposer.stats.model_calls - calls0) / n_calls, maxsize=maxsize,
        cpu_ms_per_proposal=1e3 * cpu / len(children),
    )


def main(argv: list[str] | None = None) -> int:
    from dataclasses import asdict

    p = argparse.ArgumentParser(prog="python -m ttsr_bridge.bench.proposer_speed", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default", help="exported .onnx path or 'default'")
    p.add_argument("--json", action="store_true", help="print one JSON line (default: readable lines)")
    p.add_argument("--requests", type=int, default=31, help="requests per call (one per population)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=2, help="proposer threads (parts of a batch decoded in parallel)")
    p.add_argument("--maxsize", type=int, default=30)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        res = measure(args.model, requests=args.requests, seconds=args.seconds, threads=args.threads,
                      maxsize=args.maxsize, seed=args.seed, top_k=args.top_k)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(res)))
    else:
        for k, v in asdict(res).items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
