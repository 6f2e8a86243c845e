"""The shipped default proposer: present, small, loads without torch, proposes valid children
that use only the search's operators and features, and behaves like a mutation operator."""

from __future__ import annotations

import numpy as np

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.expr.parser import parse_tree
from ttsr_bridge.propose.onnx_proposer import OnnxProposer, default_model_path
from ttsr_bridge.propose.protocol import DataStats, ProblemContext, ProposalRequest


def test_default_model_shipped_and_small():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size <= 10 * 2**20
    assert path.with_name(path.name + ".json").is_file()


def test_default_model_proposes_valid_mutations():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(50, 2))
    y = X[:, 0] * np.cos(X[:, 1])
    ops = OperatorSet.from_names(["+", "-", "*", "/"], ["cos", "exp"])
    ctx = ProblemContext(nfeatures=2, operators=ops, maxsize=20, data_stats=DataStats.from_data(X, y))
    parents = ["x1 * cos(x2 + 0.5)", "(x1 + 1.5) * x2", "exp(x1) - x2", "x1"]
    reqs = [
        ProposalRequest(parse_tree(p), 0.3, 0.3, population=i, iteration=3, temperature=0.5,
                        curmaxsize=20, context=ctx)
        for i, p in enumerate(parents * 32)
    ]
    children = OnnxProposer("default").propose(reqs, np.random.default_rng(1))
    assert len(children) == len(reqs)
    allowed = {o.id for o in ops.all}
    valid = [c for c in children if c is not None]
    assert len(valid) >= len(reqs) - 1
    for c in valid:
        assert c.is_valid() and len(c) <= 20
        assert {-k for k in c.codes if k < 0} <= allowed
        assert all(k <= 2 for k in c.codes if k > 0)
    # A trained mutation model mostly edits its parent: most children share a node with it.
    same_root = sum(c.codes[0] == r.parent.codes[0] for c, r in zip(children, reqs) if c is not None)
    assert same_root >= len(valid) // 3
    # ... and it does not just copy the parent back: about 43 % of its children differ (measured
    # over 40 seeds, graph versions 2 and 3 alike); 128 requests put 0.3 about 3 sigma below.
    assert sum(c != r.parent for c, r in zip(children, reqs) if c is not None) >= 0.3 * len(valid)
