"""Small real proposers used by the proposal-server tests (also importable by a ``ttsr serve``
subprocess as ``tests.propose.test_server_proposers:make_scaling``)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ttsr_bridge.expr.tree import Expr, const, op, var
from ttsr_bridge.propose.protocol import ProposalOutcome, ProposalRequest


class ScalingProposer:
    """Deterministic real move: multiply every constant by ``factor``; a tree without constants
    becomes ``parent * factor`` (declined when that exceeds ``curmaxsize``). Records batch sizes
    and feedback so tests can check batching and the feedback path."""

    def __init__(self, factor: float = 1.5):
        self.factor = factor
        self.batch_sizes: list[int] = []
        self.outcomes: list[ProposalOutcome] = []
        self._lock = threading.Lock()

    def propose(self, requests: Sequence[ProposalRequest], rng: np.random.Generator) -> list[Expr | None]:
        with self._lock:
            self.batch_sizes.append(len(requests))
        out: list[Expr | None] = []
        for r in requests:
            p = r.parent
            if p.constant_indices():
                vals = [v * self.factor if c == 0 else v for c, v in zip(p.codes, p.vals)]
                out.append(Expr(p.codes, vals))
            elif len(p) + 2 <= r.curmaxsize:
                out.append(op("*", p, const(self.factor)))
            else:
                out.append(None)
        return out

    def feedback(self, outcomes: Sequence[ProposalOutcome]) -> None:
        with self._lock:
            self.outcomes.extend(outcomes)


class FailingProposer:
    """Raises on every batch (the server must answer with errors and keep running)."""

    def propose(self, requests, rng):
        raise RuntimeError("model exploded")


def make_scaling() -> ScalingProposer:
    return ScalingProposer()


def test_scaling_proposer_is_a_real_move():
    from ttsr_bridge.expr.operators import OperatorSet
    from ttsr_bridge.propose.protocol import ProblemContext

    ctx = ProblemContext(nfeatures=2, operators=OperatorSet.from_names(["+", "*"], ["sin"]), maxsize=10)
    parent = op("+", var(0), const(2.0))
    req = ProposalRequest(parent, 1.0, 1.0, 0, 0, 1.0, 10, ctx)
    [child] = ScalingProposer().propose([req], np.random.default_rng(0))
    assert child == op("+", var(0), const(3.0))
    bare = ProposalRequest(var(1), 1.0, 1.0, 0, 0, 1.0, 2, ctx)
    assert ScalingProposer().propose([bare], np.random.default_rng(0)) == [None]
