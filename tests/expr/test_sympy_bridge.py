"""to_sympy, round_constants and the exact-recovery check."""

from __future__ import annotations

import time

import pytest
import sympy as sp

from ttsr_bridge.expr.parser import parse_formula, parse_tree
from ttsr_bridge.expr.sympy_bridge import equivalent, round_constants, to_sympy
from ttsr_bridge.expr.tree import Expr


def test_to_sympy_structure():
    x, y = sp.symbols("x y", real=True)
    e = parse_tree("(x1 * 2.5) + sin(x2 ^ 2.0)")
    assert to_sympy(e, ["x", "y"]) == 2.5 * x + sp.sin(y**2)
    assert to_sympy(parse_tree("neg(square(x1)) + relu(x2)"), ["x", "y"]) == -(x**2) + sp.Max(y, 0)
    assert to_sympy(parse_tree("x3")).name == "x3"
    with pytest.raises(ValueError):
        to_sympy(Expr([-1, 1]))


def test_round_constants():
    x = sp.Symbol("x")
    r = round_constants(sp.Float(2.0000001) * x + sp.Float(0.4999999999) * sp.exp(x), 1e-6)
    assert r == 2 * x + sp.exp(x) / 2
    assert round_constants(sp.Float(1.2345) * x, 1e-6) == sp.Float(1.2345) * x
    assert round_constants(sp.Float(2.01) * x, 1e-6) == sp.Float(2.01) * x


@pytest.mark.parametrize(
    "candidate, truth, names, expected",
    [
        ("(x1 * 2.0000000001) + x1", "3*x", ["x"], True),
        ("(x1 * x1) * 0.5", "x**2/2", ["x"], True),
        ("1.0 - (cos(x1) ^ 2.0)", "sin(x)**2", ["x"], True),
        ("x1 / x2", "a/b", ["a", "b"], True),
        (
            "exp(neg(x1 * x1) / 2.0) / sqrt(6.283185307179586)",
            "exp(-theta**2/2)/sqrt(2*pi)",
            ["theta"],
            True,
        ),
        ("x1 * x1", "x*3", ["x"], False),
        ("x1 * 3.01", "3*x", ["x"], False),
        ("sin(x1)", "cos(x)", ["x"], False),
        ("x1 + 1.0", "x", ["x"], False),  # differs by a constant: not exact recovery
        ("x1 * 2.0", "x", ["x"], False),  # ratio 2: not exact recovery
    ],
)
def test_equivalent_cases(candidate, truth, names, expected):
    assert equivalent(parse_tree(candidate, names), truth, names, timeout=None) is expected


def test_equivalent_with_sympy_inputs_and_worker():
    x = sp.Symbol("x", real=True)
    cand = parse_tree("(x1 + 1.0) * (x1 - 1.0)")
    assert equivalent(cand, x**2 - 1, ["x"], timeout=60.0)  # runs in the worker process
    assert not equivalent(cand, x**2 + 1, ["x"], timeout=60.0)
    truth = parse_formula("x**2 - 1", ["x"])
    assert equivalent(to_sympy(cand, ["x"]), truth, ["x"], timeout=None)


def test_equivalent_timeout_returns_false():
    # A symbolic problem SymPy cannot finish in 0.2 s (the numeric pre-check cannot decide it:
    # the expressions are only given as SymPy objects).
    x, y, z = sp.symbols("x y z", real=True)
    big = sp.expand((sp.sin(x) + sp.cos(y) + z + 1) ** 5)  # simplify(big - other): ~2 s
    other = big * sp.Float(1.001)
    equivalent(parse_tree("x1"), "x", ["x"], timeout=60.0)  # make sure the worker is up
    start = time.perf_counter()
    assert equivalent(big, other, ["x", "y", "z"], timeout=0.2) is False
    assert time.perf_counter() - start < 10.0
    # the pool recovers after a timeout
    assert equivalent(parse_tree("x1 * 2.0"), "2*x", ["x"], timeout=60.0)


def _equivalence_in_worker(_: int) -> bool:
    from ttsr_bridge.expr.parser import parse_formula
    from ttsr_bridge.expr.sympy_bridge import equivalent

    return equivalent(parse_formula("x*2", ["x"]), parse_formula("2*x", ["x"]), ["x"], timeout=5.0)


def test_worker_processes_using_equivalent_exit_cleanly():
    """A parallel benchmark's workers each start a SymPy worker; they must still exit (their
    exit joins child processes, so the idle SymPy worker must be stopped first)."""
    import concurrent.futures as cf
    import multiprocessing as mp

    ex = cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"))
    try:
        assert list(ex.map(_equivalence_in_worker, range(2), timeout=120)) == [True, True]
    finally:
        procs = list(ex._processes.values())
        ex.shutdown(wait=False)
    for p in procs:
        p.join(timeout=60)
        assert not p.is_alive(), "a worker hung on exit"
