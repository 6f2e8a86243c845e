"""string_tree in SR.jl's form and Julia Float64 formatting."""

from __future__ import annotations

import math

import pytest

from ttsr_bridge.expr.parser import parse_formula, parse_tree
from ttsr_bridge.expr.printer import format_julia_float, string_tree, to_infix
from ttsr_bridge.expr.tree import Expr, const, op, var


@pytest.mark.parametrize(
    "value, text",
    [
        (1.0, "1.0"),
        (0.1, "0.1"),
        (-2.5, "-2.5"),
        (1e-5, "1.0e-5"),
        (1.5e-5, "1.5e-5"),
        (0.0001, "0.0001"),
        (0.00012345, "0.00012345"),
        (100000.0, "100000.0"),
        (123456.0, "123456.0"),
        (1e6, "1.0e6"),
        (1234567.0, "1.234567e6"),
        (1e15, "1.0e15"),
        (1e16, "1.0e16"),
        (1e100, "1.0e100"),
        (5e-324, "5.0e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308"),
        (3.141592653589793, "3.141592653589793"),
        (12345.678, "12345.678"),
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (math.inf, "Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (2.0**60, "1.152921504606847e18"),
        (-0.001, "-0.001"),
        (42.0, "42.0"),
    ],
)
def test_format_julia_float(value, text):
    assert format_julia_float(value) == text


def test_string_tree_forms():
    e = op("+", op("*", var(0), const(2.5)), op("sin", var(1)))
    assert string_tree(e) == "(x1 * 2.5) + sin(x2)"
    assert string_tree(e, ["a", "b"]) == "(a * 2.5) + sin(b)"
    assert string_tree(e, ["a"]) == "(a * 2.5) + sin(x2)"  # SR.jl: x{k} beyond the names
    assert string_tree(op("max", op("+", var(0), var(1)), const(-3.0))) == "max(x1 + x2, -3.0)"
    assert string_tree(op("neg", op("-", var(0), const(-1e-7)))) == "neg(x1 - -1.0e-7)"
    assert string_tree(op("^", const(-2.0), var(0))) == "-2.0 ^ x1"
    assert string_tree(op("log", op("sqrt", var(2)))) == "log(sqrt(x3))"
    assert string_tree(op("cos", op("*", op("+", var(0), var(1)), var(2)))) == "cos((x1 + x2) * x3)"
    assert string_tree(const(3.0)) == "3.0"
    assert string_tree(var(9)) == "x10"


def test_string_tree_pretty():
    e = op("+", op("*", var(0), const(2.123456789)), op("exp", var(11)))
    assert string_tree(e, pretty=True) == "(x₁ * 2.1235) + exp(x₁₂)"


def test_string_tree_malformed():
    with pytest.raises(ValueError):
        string_tree(Expr([-1, 1]))
    with pytest.raises(ValueError):
        string_tree(Expr([1, 2]))


def test_to_infix_reads_back():
    import numpy as np

    from ttsr_bridge.expr.evaluate import evaluate

    e = op(
        "+", op("square", op("/", var(0), const(-2.5))), op("log10", op("max", var(1), const(0.5)))
    )
    text = to_infix(e, ["u", "v"])
    assert "**2" in text and "Max(" in text
    back = parse_formula(text, ["u", "v"])
    X = np.random.default_rng(0).uniform(0.1, 3, size=(20, 2))
    np.testing.assert_allclose(evaluate(back, X), evaluate(e, X))
    assert parse_tree(string_tree(e)) == e
