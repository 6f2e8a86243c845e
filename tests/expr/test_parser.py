"""parse_tree / parse_formula: SR.jl round trips, precedence, errors, benchmark formulas."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from ttsr_bridge.expr.evaluate import evaluate
from ttsr_bridge.expr.operators import BY_NAME
from ttsr_bridge.expr.parser import ParseError, parse_formula, parse_tree
from ttsr_bridge.expr.printer import string_tree
from ttsr_bridge.expr.tree import Expr, const, op, var

BENCH = Path("/work/shared/benchmarks")
# Neat-6 is harmonic(x1) = sum_{i<=x1} 1/i, which no operator set expresses as a finite tree:
# parse_formula rejects it (the problem suite must special-case or drop it).
DSO_NOT_CLOSED_FORM = {"Neat-6"}


def _same(a: Expr, b: Expr) -> bool:
    """Same codes and bit-identical constants (NaN equal to NaN)."""
    if a.codes != b.codes:
        return False
    return all(
        (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y))
        for x, y in zip(a.vals, b.vals)
    )


def test_round_trip_random_trees(make_tree):
    rng = np.random.default_rng(5)
    for _ in range(300):
        e = make_tree(rng, int(rng.integers(0, 15)), nfeatures=12)
        k = int(rng.integers(0, len(e)))
        if e.codes[k] == 0:  # sprinkle awkward constants
            e.vals[k] = float(
                rng.choice([-0.0, math.inf, -math.inf, math.nan, 1e-300, -1e22, 5e-324])
            )
        text = string_tree(e)
        assert _same(parse_tree(text), e), text
        names = [f"v{i}" for i in range(5)]
        assert _same(parse_tree(string_tree(e, names), names), e)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("x1 + x2 * x3", op("+", var(0), op("*", var(1), var(2)))),
        ("x1 - x2 - x3", op("-", op("-", var(0), var(1)), var(2))),
        ("x1 / x2 * x3", op("*", op("/", var(0), var(1)), var(2))),
        ("x1 ^ x2 ^ x3", op("^", var(0), op("^", var(1), var(2)))),
        ("x1 ** 2", op("^", var(0), const(2.0))),
        ("-x1 ^ 2", op("*", const(-1.0), op("^", var(0), const(2.0)))),
        ("-2.5 ^ x1", op("^", const(-2.5), var(0))),
        ("x1 * -2.5", op("*", var(0), const(-2.5))),
        ("x1 - -Inf", op("-", var(0), const(-math.inf))),
        ("neg(x1)", op("neg", var(0))),
        ("-(x1 + 1)", op("*", const(-1.0), op("+", var(0), const(1.0)))),
        ("-(2)", const(-2.0)),
        ("+x1", var(0)),
        ("safe_log(x1)", op("log", var(0))),
        ("max(x1, 1e3)", op("max", var(0), const(1000.0))),
        ("x₂", var(1)),
        ("  sin ( x1 )  ", op("sin", var(0))),
    ],
)
def test_parse_tree_cases(text, expected):
    assert parse_tree(text) == expected


def test_parse_tree_names():
    assert parse_tree("a * x3 + b", ["a", "b"]) == op("+", op("*", var(0), var(2)), var(1))
    with pytest.raises(ParseError):
        parse_tree("c", ["a", "b"])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "x1 +",
        "sin(x1, x2)",
        "max(x1)",
        "foo(x1)",
        "x0",
        "(x1",
        "x1)",
        "1e",
        "3 x1",
        "x1 # 2",
        "sin()",
        "x1 ,",
        "()",
        "x1 ^^ 2",
        "1.2.3",
        "(" * 1000 + "x1" + ")" * 1000,
        "x1 ***",
    ],
)
def test_parse_errors(text):
    with pytest.raises(ParseError) as info:
        parse_tree(text)
    assert 0 <= info.value.position <= len(text)
    assert "position" in str(info.value)


def test_parse_error_is_value_error():
    assert issubclass(ParseError, ValueError)
    with pytest.raises(TypeError):
        parse_tree(3)  # type: ignore[arg-type]


def test_parse_formula_sympy_syntax():
    names = ["theta", "sigma"]
    e = parse_formula("exp(-theta**2/2)/sqrt(2*pi)", names)
    X = np.array([[0.5, 1.0], [1.5, 2.0]])
    np.testing.assert_allclose(evaluate(e, X), np.exp(-(X[:, 0] ** 2) / 2) / np.sqrt(2 * np.pi))
    assert parse_formula("-2**theta", names) == op("*", const(-1.0), op("^", const(2.0), var(0)))
    assert parse_formula("pow(theta, 3)", names) == op("^", var(0), const(3.0))
    assert parse_formula("E", names) == const(math.e)
    assert parse_formula("E", ["E"]) == var(0)  # a variable shadows the constant
    assert parse_formula("arcsin(theta) + ln(sigma)", names) == op(
        "+", op("asin", var(0)), op("log", var(1))
    )
    e = parse_formula("log(theta, 2)", names)
    np.testing.assert_allclose(evaluate(e, X), np.log2(X[:, 0]))
    with pytest.raises(ParseError):
        parse_formula("x1 + theta", names)  # no x1..xn in formulas
    with pytest.raises(ValueError):
        parse_formula("a", ["a b"])


def _feynman_rows():
    with open(BENCH / "FeynmanEquations.csv", encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("Formula"):
                continue
            n = int(row["# variables"])
            names = [row[f"v{i}_name"] for i in range(1, n + 1)]
            yield row["Filename"], row["Formula"], names


@pytest.mark.skipif(not BENCH.is_dir(), reason="/work/shared/benchmarks is absent")
def test_all_benchmark_formulas_parse():
    import yaml

    count = 0
    rng = np.random.default_rng(0)
    for name, formula, names in _feynman_rows():
        e = parse_formula(formula, names)
        assert e.is_valid() and e.features_used() <= set(range(len(names))), name
        out = evaluate(e, rng.uniform(1, 5, size=(16, len(names))))
        assert np.isfinite(out).any(), name
        count += 1
    assert count >= 100
    with open(BENCH / "dso_benchmarks.csv", newline="") as f:
        for row in csv.DictReader(f):
            names = [f"x{i}" for i in range(1, int(row["variables"]) + 1)]
            if row["name"] in DSO_NOT_CLOSED_FORM:
                with pytest.raises(ParseError, match="unknown function"):
                    parse_formula(row["expression"], names)
                continue
            assert parse_formula(row["expression"], names).is_valid(), row["name"]
            count += 1
    doc = yaml.safe_load((BENCH / "pysr_tuning_problems.yaml").read_text())
    for problem in doc["problems"]:
        assert parse_formula(problem["formula"], list(problem["variables"])).is_valid()
        count += 1
    assert count > 150


def test_user_operator_parses_after_registration():
    from ttsr_bridge.expr.operators import register_operator

    u = register_operator("test_parse_op", 2, lambda a, b: a + 2 * b)
    e = parse_tree("test_parse_op(x1, 2.0)")
    assert e.codes == [-u.id, 1, 0]
    assert parse_tree(string_tree(e)) == e
    assert BY_NAME["test_parse_op"] is u
