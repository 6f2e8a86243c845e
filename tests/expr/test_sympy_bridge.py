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
        manager = ex._executor_manager_thread
        ex.shutdown(wait=False)
    # The executor's manager thread joins (reaps) the workers after shutdown; joining them here
    # as well would race it (a waitpid that loses gets ECHILD, and the worker then looks alive).
    manager.join(timeout=60)
    assert not manager.is_alive(), "a worker hung on exit"
    assert all(p.exitcode is not None for p in procs)


# ---- domains: sign assumptions from the variables' sampling ranges ------------------------------
NGUYEN7 = "log(x + 1) + log(x**2 + 1)"


@pytest.mark.parametrize(
    "candidate, truth",
    [
        # Nguyen-7 written differently (true identities for every real x > -1: no domain needed)
        ("log((x + 1) * (x * x + 1))", NGUYEN7),
        ("log(x * (x * (x + 1) + 1) + 1)", NGUYEN7),
        ("log(x + 1) + log(x * x + 1)", NGUYEN7),
        # Nguyen-8 through exp/log (exp(a*log(x)) == x**a on SymPy's principal branch)
        ("exp(log(x) * 0.5)", "sqrt(x)"),
        ("exp(log(x) / 2.0)", "sqrt(x)"),
        ("exp(0.5 * log(x))", "sqrt(x)"),
        ("x / exp(log(x) * 0.5)", "sqrt(x)"),
        ("exp(log(x) * 0.5000000001)", "sqrt(x)"),  # constant within tol of 1/2
    ],
)
def test_equivalent_recognises_rewritings_with_and_without_domains(candidate, truth):
    names = ["x"]
    cand = parse_tree(candidate, names)
    assert equivalent(cand, truth, names, timeout=None)
    domain = {"x": (0.0, 2.0)} if truth == NGUYEN7 else {"x": (0.0, 4.0)}
    assert equivalent(cand, truth, names, timeout=None, domains=domain)


@pytest.mark.parametrize(
    "candidate, truth, positive, spanning",
    [
        # identities that hold only where the variable is positive
        ("exp(log(x * x) * 0.25)", "sqrt(x)", (0.0, 4.0), (-4.0, 4.0)),
        ("log(x * x) * 0.5", "log(x)", (0.0, 4.0), (-4.0, 4.0)),
        ("x", "sqrt(x**2)", (0.0, 4.0), (-4.0, 4.0)),
        # log(x**2 + 2x + 1) == 2*log(x + 1) needs x + 1 > 0 (it is 2*log|x + 1| for real x)
        ("(log((x + 1) * (x + 1)) * 0.5) + log((x * x) + 1)", NGUYEN7, (0.0, 2.0), (-3.0, 2.0)),
    ],
)
def test_equivalent_positive_domain_enables_identities(candidate, truth, positive, spanning):
    names = ["x"]
    cand = parse_tree(candidate, names)
    assert equivalent(cand, truth, names, timeout=None) is False  # default: x merely real
    assert equivalent(cand, truth, names, timeout=None, domains={"x": positive})
    assert equivalent(cand, truth, names, timeout=None, domains={"x": spanning}) is False


def test_equivalent_negative_domain():
    cand = parse_tree("x * -1.0", ["x"])
    assert equivalent(cand, "sqrt(x**2)", ["x"], timeout=None, domains={"x": (-4.0, 0.0)})
    assert not equivalent(cand, "sqrt(x**2)", ["x"], timeout=None, domains={"x": (-4.0, 4.0)})


@pytest.mark.parametrize(
    "candidate, truth, domains",
    [
        # false friends stay rejected with a positive domain
        ("log(x + 1) + log(x * x)", NGUYEN7, {"x": (0.0, 2.0)}),
        ("exp(log(x) * 0.51)", "sqrt(x)", {"x": (0.0, 4.0)}),
        ("exp(log(x) * 0.5) + 1e-3", "sqrt(x)", {"x": (0.0, 4.0)}),
        ("log(x + 1) * 2.0", NGUYEN7, {"x": (0.0, 2.0)}),
        # log(a*b) vs log(a) + log(b): not blindly accepted when a, b can be negative
        ("log(a * b)", "log(a) + log(b)", {"a": (-1.0, 1.0), "b": (-1.0, 1.0)}),
        ("log(a * b)", "log(a) + log(b)", {"a": (-1.0, -0.1), "b": (-1.0, -0.1)}),
        ("log(a * b)", "log(a) + log(b)", None),
    ],
)
def test_equivalent_domains_still_reject_false_friends(candidate, truth, domains):
    names = sorted({"x"} if "x" in candidate else {"a", "b"})
    assert equivalent(parse_tree(candidate, names), truth, names, timeout=None, domains=domains) is False


def test_equivalent_domains_accept_log_product_when_positive():
    names = ["a", "b"]
    cand = parse_tree("log(a * b)", names)
    assert equivalent(cand, "log(a) + log(b)", names, timeout=None, domains={"a": (0.1, 1.0), "b": (0.0, 1.0)})
    # one positive factor suffices: log(a*b) == log(a) + log(b) for a > 0 and any b (principal log)
    assert equivalent(cand, "log(a) + log(b)", names, timeout=None, domains={"a": (0.1, 1.0), "b": (-1.0, 1.0)})


def test_equivalent_domains_numeric_precheck_samples_inside_the_range():
    # |x| == x on [0, 4]; the default pre-check (which also samples negative x) rejects it
    # before SymPy, the domain-aware one does not.
    names = ["x"]
    x = sp.Symbol("x", real=True)
    cand = parse_tree("sqrt(x * x)", names)
    assert equivalent(cand, "x", names, timeout=None) is False
    assert equivalent(cand, "x", names, timeout=None, domains={"x": (0, 4)})
    assert equivalent(to_sympy(cand, names), x, names, timeout=None, domains={"x": [0, 4]})


def test_equivalent_domains_in_the_worker_process():
    names = ["x"]
    cand = parse_tree("exp(log(x * x) * 0.25)", names)
    assert equivalent(cand, "sqrt(x)", names, timeout=60.0, domains={"x": (0.0, 4.0)})
    assert not equivalent(cand, "sqrt(x)", names, timeout=60.0, domains={"x": (-4.0, 4.0)})


@pytest.mark.parametrize(
    "domains",
    [{"y": (0.0, 1.0)}, {"x": (1.0, 0.0)}, {"x": (0.0, float("inf"))}, {"x": (0.0,)}, {"x": "ab"}],
)
def test_equivalent_rejects_bad_domains(domains):
    with pytest.raises(ValueError):
        equivalent(parse_tree("x1"), "x", ["x"], timeout=None, domains=domains)
