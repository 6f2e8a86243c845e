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


# ---- Julia Float32 literals (SR.jl precision=32, PySR's default) -------------------------------
def _f32(text: str) -> float:
    return float(np.float32(text))


@pytest.mark.parametrize(
    "text, value",
    [
        ("2.5f0", 2.5),
        ("0.1f0", _f32("0.1")),  # 0.10000000149011612: what SR.jl's Float32 tree holds
        ("1.0f-5", _f32("1.0e-5")),
        ("1.0f10", 1e10),
        ("3.4028235f38", float(np.finfo(np.float32).max)),
        ("1.0f-45", _f32("1e-45")),  # smallest subnormal
        ("2f0", 2.0),
        (".5f0", 0.5),
        ("1.5f+2", 150.0),
        ("-3.0f2", -300.0),
        ("-0.0f0", -0.0),
        ("Inf32", math.inf),
        ("-Inf32", -math.inf),
        ("NaN32", math.nan),
    ],
)
def test_parse_tree_float32_literals(text, value):
    e = parse_tree(text)
    assert _same(e, const(value)), (text, e.vals)
    assert _same(parse_tree(string_tree(e)), e)  # reprinted as Float64, read back exactly


def test_parse_tree_float32_in_trees():
    assert parse_tree("(x1 * -2.5f0) + sin(x2)") == op(
        "+", op("*", var(0), const(-2.5)), op("sin", var(1))
    )
    assert parse_tree("-2.5f0 ^ x1") == op("^", const(-2.5), var(0))  # the literal minus
    assert parse_tree("x1 - -Inf32") == op("-", var(0), const(-math.inf))
    assert _same(parse_tree("max(x1, 0.1f0)"), op("max", var(0), const(_f32("0.1"))))
    # A variable named f0 or Inf32 is unaffected: a number glued to a name was never valid.
    assert parse_tree("f0 * 2.5f0", ["f0"]) == op("*", var(0), const(2.5))
    assert parse_tree("Inf32 + NaN32", ["Inf32"]).codes == [-1, 1, 0]
    for bad in ("2.5f", "2.5f0x1", "1e5f0", "2.5F0", "2.5 f0", "2.5f0.5", "2.5f-"):
        with pytest.raises(ParseError):
            parse_tree(bad)


def test_float32_rounds_once_from_the_decimal():
    """Julia rounds a Float32 literal straight from its decimal; going through float64 rounds
    twice. 1 + 2^-24 is halfway between 1 and the next Float32; a decimal just above it must
    round up even though its nearest float64 is the midpoint itself (which rounds to even)."""
    from ttsr_bridge.expr.parser import float32_value

    above, below, mid = (
        "1.0000000596046447753906251",
        "1.0000000596046447753906249",
        "1.000000059604644775390625",
    )
    assert float(above) == float(mid) == 1 + 2**-24
    assert float32_value(above) == 1 + 2**-23 and parse_tree(above + "f0") == const(1 + 2**-23)
    assert float32_value(mid) == 1.0 and float32_value(below) == 1.0
    assert float32_value("3.5e38") == math.inf and float32_value("1e-50") == 0.0


def test_float32_value_matches_exact_rounding():
    """Against exact rational rounding on random decimals near Float32 midpoints and ulps."""
    from decimal import Decimal, localcontext
    from fractions import Fraction

    from ttsr_bridge.expr.parser import float32_value

    def reference(text: str) -> float:
        exact = Fraction(text)
        start = np.float32(float(exact))
        candidates = [
            start,
            np.nextafter(start, np.float32(np.inf)),
            np.nextafter(start, np.float32(-np.inf)),
        ]

        def key(c):
            return (abs(Fraction(float(c)) - exact), int(c.view(np.uint32)) & 1)

        return float(min(candidates, key=key))

    rng = np.random.default_rng(7)
    bits = rng.integers(0x00000001, 0x7F7FFFFE, size=400, dtype=np.uint32)
    with localcontext() as ctx:
        ctx.prec = 200
        for b in bits:
            lo = b.view(np.float32)
            hi = np.nextafter(lo, np.float32(np.inf))
            mid = (Decimal(float(lo)) + Decimal(float(hi))) / 2
            nudge = mid * Decimal(10) ** int(rng.integers(-40, -17)) * int(rng.choice([-1, 0, 1]))
            for d in (mid + nudge, Decimal(float(lo)), Decimal(repr(float(lo) * 1.0000001))):
                text = f"{d:e}"
                assert float32_value(text) == reference(text), text


def test_float32_literals_are_not_formula_syntax():
    with pytest.raises(ParseError, match="Julia Float32 literal.*not SymPy syntax"):
        parse_formula("2.5f0 * a", ["a"])
    with pytest.raises(ParseError, match="unknown name 'Inf32'"):
        parse_formula("Inf32", ["a"])
    assert parse_formula("f0 * 2", ["f0"]) == op("*", var(0), const(2.0))


@pytest.mark.parametrize("text", ["Float16(2.5)", "x1 + Float16(2.5)", "Inf16", "-NaN16"])
def test_float16_constants_rejected_clearly(text):
    with pytest.raises(ParseError, match="Float16 constant .* not supported"):
        parse_tree(text)
    assert parse_tree("Inf16 * 2", ["Inf16"]) == op("*", var(0), const(2.0))  # a name wins
