import numpy as np

from ttsr_bridge.expr.tree import const, op, var
from ttsr_bridge.propose.classic import ClassicProposer
from ttsr_bridge.propose.protocol import ProblemContext, ProposalRequest, Proposer
from ttsr_bridge.search import SearchConfig


def test_classic_proposer_returns_valid_children_within_size():
    cfg = SearchConfig.preset("pysr", maxsize=9)
    prop = ClassicProposer(cfg)
    assert isinstance(prop, Proposer)
    ctx = ProblemContext(nfeatures=2, operators=cfg.operator_set, maxsize=9)
    parent = op("+", op("*", var(0), const(2.0)), var(1))
    reqs = [ProposalRequest(parent, 1.0, 1.0, i % 3, 0, 1.0, 7, ctx) for i in range(200)]
    out = prop.propose(reqs, np.random.default_rng(0))
    assert len(out) == 200 and prop.calls == 1 and prop.requests == 200
    children = [c for c in out if c is not None]
    assert len(children) > 150
    assert all(c.is_valid() and len(c) <= 7 for c in children)
    assert any(c != parent for c in children)
    again = ClassicProposer(cfg).propose(reqs, np.random.default_rng(0))
    assert [c.key() if c else None for c in again] == [c.key() if c else None for c in out]
