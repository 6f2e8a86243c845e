"""Shared helpers for the expression tests: seeded random trees over every built-in operator."""

from __future__ import annotations

import numpy as np
import pytest

from ttsr_bridge.expr.evaluate import COMPILED_OPERATOR_IDS
from ttsr_bridge.expr.operators import OPERATORS
from ttsr_bridge.expr.tree import Expr

BUILTIN_BINARY = sorted(i for i in COMPILED_OPERATOR_IDS if OPERATORS[i].arity == 2)
BUILTIN_UNARY = sorted(i for i in COMPILED_OPERATOR_IDS if OPERATORS[i].arity == 1)


def random_tree(
    rng: np.random.Generator,
    n_ops: int,
    nfeatures: int = 3,
    binary: list[int] | None = None,
    unary: list[int] | None = None,
) -> Expr:
    """A random tree with ``n_ops`` operator nodes (prefix codes), constants ~ N(0, 2)."""
    binary = BUILTIN_BINARY if binary is None else binary
    unary = BUILTIN_UNARY if unary is None else unary

    def leaf() -> tuple[list[int], list[float]]:
        if rng.random() < 0.5:
            return [0], [float(rng.normal(0.0, 2.0))]
        return [int(rng.integers(1, nfeatures + 1))], [0.0]

    def grow(k: int) -> tuple[list[int], list[float]]:
        if k == 0:
            return leaf()
        if unary and (not binary or rng.random() < 0.3):
            c, v = grow(k - 1)
            return [-int(rng.choice(unary))] + c, [0.0] + v
        left = int(rng.integers(0, k))
        a, av = grow(left)
        b, bv = grow(k - 1 - left)
        return [-int(rng.choice(binary))] + a + b, [0.0] + av + bv

    codes, vals = grow(n_ops)
    return Expr(codes, vals)


@pytest.fixture
def make_tree():
    return random_tree
