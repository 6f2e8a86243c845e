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


def test_classic_proposer_uses_the_request_context_operators_and_size():
    # the proposer's own config has + - * / only; the search's context adds unary operators
    prop = ClassicProposer(SearchConfig.preset("pysr"))
    search_ops = SearchConfig.preset("pysr", unary_operators=("sin", "exp")).operator_set
    ctx = ProblemContext(nfeatures=3, operators=search_ops, maxsize=12)
    parent = op("sin", op("+", op("exp", var(2)), const(1.5)))
    reqs = [ProposalRequest(parent, 1.0, 1.0, 0, 0, 1.0, 10, ctx) for _ in range(300)]
    out = prop.propose(reqs, np.random.default_rng(3))
    allowed = {-o.id for o in search_ops.all}
    children = [c for c in out if c is not None]
    assert len(children) > 250
    assert all(c.is_valid() and len(c) <= 10 for c in children)
    assert all(code in allowed for c in children for code in c.codes if code < 0)
    assert all(code <= 3 for c in children for code in c.codes)
    # unary operators are mutated among the context's unary operators (the bug: IndexError)
    unary = {-o.id for o in search_ops.unary}
    assert any(c.codes[0] in unary and c.codes[0] != parent.codes[0] for c in children)


def test_classic_proposer_inside_a_search_with_unary_operators():
    from ttsr_bridge.search import equation_search

    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (40, 2))
    y = np.sin(X[:, 0]) + X[:, 1]
    cfg = SearchConfig.preset("pysr", unary_operators=("sin", "cos"), populations=3, population_size=12, tournament_selection_n=6,
                              ncycles_per_iteration=10, niterations=2, random_state=0)
    res = equation_search(X, y, cfg, proposer=ClassicProposer(), neural_weight=5.0)
    ps = res.stats.proposer
    assert ps.requests > 0 and ps.proposed > 0 and ps.proposed + ps.fallback == ps.requests
