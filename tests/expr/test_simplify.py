"""simplify_tree / combine_operators: SR.jl rewrites, and values are preserved."""

from __future__ import annotations

import numpy as np
import pytest

from ttsr_bridge.expr.evaluate import EvalData, eval_batch
from ttsr_bridge.expr.parser import parse_tree
from ttsr_bridge.expr.printer import string_tree
from ttsr_bridge.expr.simplify import combine_operators, simplify_tree


@pytest.mark.parametrize(
    "text, simplified, combined",
    [
        ("(1.0 + 2.0) * x1", "3.0 * x1", "x1 * 3.0"),
        ("cos(x1 + (2.0 * 3.0))", "cos(x1 + 6.0)", "cos(x1 + 6.0)"),
        ("sin(0.0) + log(-1.0)", "0.0 + log(-1.0)", "log(-1.0) + 0.0"),  # NaN is not folded
        ("1.0 / 0.0", "1.0 / 0.0", "1.0 / 0.0"),  # nor is inf
        ("2.0 + (3.0 + x1)", "2.0 + (3.0 + x1)", "x1 + 5.0"),
        ("(x1 * 2.0) * 3.0", "(x1 * 2.0) * 3.0", "x1 * 6.0"),
        ("(2.0 * x1) * 3.0", "(2.0 * x1) * 3.0", "x1 * 6.0"),
        ("1.0 - (2.0 - x1)", "1.0 - (2.0 - x1)", "x1 - 1.0"),
        ("1.0 - (x1 - 2.0)", "1.0 - (x1 - 2.0)", "3.0 - x1"),
        ("(1.0 - x1) - 2.0", "(1.0 - x1) - 2.0", "-1.0 - x1"),
        ("(x1 - 1.0) - 2.0", "(x1 - 1.0) - 2.0", "x1 - 3.0"),
        ("x1 + x2", "x1 + x2", "x1 + x2"),
        ("4.0", "4.0", "4.0"),
        ("x1 ^ (0.5 * 4.0)", "x1 ^ 2.0", "x1 ^ 2.0"),
    ],
)
def test_sr_rewrites(text, simplified, combined):
    e = parse_tree(text)
    s = simplify_tree(e)
    assert string_tree(s) == simplified
    assert string_tree(combine_operators(s)) == combined
    assert parse_tree(text) == e  # inputs are not modified


def test_values_preserved_on_random_trees(make_tree):
    rng = np.random.default_rng(11)
    X = rng.uniform(-3, 3, size=(40, 3))
    data = EvalData(X, np.zeros(40))
    exprs = [
        make_tree(rng, int(rng.integers(1, 12)), binary=[1, 2, 3, 4, 5], unary=[20, 29, 23, 28, 24])
        for _ in range(400)
    ]
    # more constants next to each other so that folding and merging happen
    simp = [simplify_tree(e) for e in exprs]
    comb = [combine_operators(s) for s in simp]
    assert all(s.is_valid() and c.is_valid() for s, c in zip(simp, comb))
    assert sum(len(s) < len(e) for s, e in zip(simp, exprs)) > 20
    assert sum(len(c) < len(s) for s, c in zip(simp, comb)) > 5
    p0, v0 = eval_batch(exprs, data)
    p1, v1 = eval_batch(simp, data)
    p2, v2 = eval_batch(comb, data)
    both = v0 & v1 & v2
    assert both.sum() > 100
    np.testing.assert_allclose(p1[both], p0[both], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(p2[both], p0[both], rtol=1e-7, atol=1e-9)


def test_malformed_rejected():
    from ttsr_bridge.expr.tree import Expr

    with pytest.raises(ValueError):
        simplify_tree(Expr([-1, 1]))
