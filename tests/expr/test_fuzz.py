"""Hypothesis fuzzing of the parsers and of the string_tree round trip."""

from __future__ import annotations

import math
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsr_bridge.expr.evaluate import COMPILED_OPERATOR_IDS
from ttsr_bridge.expr.operators import OPERATORS
from ttsr_bridge.expr.parser import ParseError, parse_formula, parse_tree
from ttsr_bridge.expr.printer import string_tree
from ttsr_bridge.expr.tree import Expr

_ALPHABET = "x1234567890.e+-*/^(), sincoexplgqrtmaINfNnpiE_₁"
_TOKENS = [
    "x1",
    "x2",
    "x10",
    "a",
    "1",
    "2.5",
    "1.0e-5",
    "-",
    "+",
    "*",
    "/",
    "^",
    "**",
    "(",
    ")",
    ",",
    " ",
    "sin",
    "max",
    "neg",
    "Inf",
    "NaN",
    "pi",
    "E",
    "pow",
    "sqrt",
    "log",
    "e5",
    # Julia Float32 literals (SR.jl precision=32) and near misses
    "2.5f0",
    "1.0f-5",
    "3f+2",
    "f0",
    "f",
    "Inf32",
    "NaN32",
    "Float16",
    "Inf16",
]

FUZZ = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _check_parse(fn, text: str, *args) -> None:
    try:
        e = fn(text, *args)
    except ParseError as err:
        assert 0 <= err.position <= len(text)
        return
    assert isinstance(e, Expr) and e.is_valid()
    # whatever parsed prints and reads back to the same tree
    back = parse_tree(string_tree(e))
    assert back.codes == e.codes


@FUZZ
@given(st.text(alphabet=_ALPHABET, max_size=40))
def test_fuzz_parse_tree_chars(text):
    _check_parse(parse_tree, text)


@FUZZ
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join))
def test_fuzz_parse_tree_tokens(text):
    _check_parse(parse_tree, text)
    _check_parse(parse_tree, text, ["a", "x2"])


@FUZZ
@given(st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join))
def test_fuzz_parse_formula_tokens(text):
    _check_parse(parse_formula, text, ["a", "x1"])


@FUZZ
@given(st.text(max_size=30))
def test_fuzz_parse_any_unicode(text):
    _check_parse(parse_tree, text)
    _check_parse(parse_formula, text, ["x"])


_OP_IDS = sorted(COMPILED_OPERATOR_IDS)
_floats = st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)
_floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@st.composite
def trees(draw, max_ops: int = 20, constants=_floats):
    """Random well-formed prefix code lists with ``constants`` drawn from the given floats."""
    n_ops = draw(st.integers(0, max_ops))
    codes: list[int] = []
    vals: list[float] = []
    need = 1
    ops_left = n_ops
    while need:
        if ops_left and draw(st.booleans()):
            opid = draw(st.sampled_from(_OP_IDS))
            codes.append(-opid)
            vals.append(0.0)
            need += OPERATORS[opid].arity - 1
            ops_left -= 1
        elif draw(st.booleans()):
            codes.append(0)
            vals.append(draw(constants))
            need -= 1
        else:
            codes.append(draw(st.integers(1, 15)))
            vals.append(0.0)
            need -= 1
    return Expr(codes, vals)


def _bits_equal(a: float, b: float) -> bool:
    if math.isnan(a):
        return math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@FUZZ
@given(trees())
def test_fuzz_tree_round_trip(e):
    text = string_tree(e)
    back = parse_tree(text)
    assert back.codes == e.codes, text
    assert all(_bits_equal(a, b) for a, b in zip(back.vals, e.vals)), text
    names = ["alpha", "b", "x2"]  # a name that is also an x<k> pattern
    back2 = parse_tree(string_tree(e, names), names)
    assert back2.codes == e.codes


def julia_float32_string(v: float) -> str:
    """``string(Float32(v))`` as Julia prints it: ``2.5f0``, ``1.0f-5``, ``1.0f10``, ``-0.0f0``,
    ``Inf32``, ``NaN32`` (shortest Float32 digits; plain when ``-4 < pt <= 6``, as Float64)."""
    if math.isnan(v):
        return "NaN32"
    if math.isinf(v):
        return "Inf32" if v > 0 else "-Inf32"
    sign = "-" if math.copysign(1.0, v) < 0 else ""
    if v == 0.0:
        return sign + "0.0f0"
    scientific = np.format_float_scientific(np.float32(abs(v)), unique=True)  # "2.5e+00"
    mantissa, _, exponent = scientific.partition("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    pt = int(exponent) + 1
    if -4 < pt <= 6:
        if pt <= 0:
            body = "0." + "0" * (-pt) + digits
        elif pt >= len(digits):
            body = digits + "0" * (pt - len(digits)) + ".0"
        else:
            body = digits[:pt] + "." + digits[pt:]
        return f"{sign}{body}f0"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}f{pt - 1}"


def test_julia_float32_string_matches_julia():
    cases = {
        2.5: "2.5f0",
        1e-5: "1.0f-5",
        1e10: "1.0f10",
        -0.0: "-0.0f0",
        0.1: "0.1f0",
        100000.0: "100000.0f0",
        1e6: "1.0f6",
        0.0001: "0.0001f0",
        -300.0: "-300.0f0",
        math.inf: "Inf32",
        math.nan: "NaN32",
        3.4028234663852886e38: "3.4028235f38",
    }
    for v, text in cases.items():
        assert julia_float32_string(float(np.float32(v))) == text


# A constant in string_tree text: a Float64 literal, Inf or NaN (x12 has no dot, never matches).
_CONSTANT_TEXT = re.compile(r"\b(?:Inf|NaN)\b|[0-9]+\.[0-9]+(?:e-?[0-9]+)?")


@FUZZ
@given(trees(constants=_floats32))
def test_fuzz_float32_string_tree(e):
    """SR.jl precision=32 text (every constant a Julia Float32 literal) reads back exactly."""
    text = _CONSTANT_TEXT.sub(lambda m: julia_float32_string(float(m.group())), string_tree(e))
    back = parse_tree(text)
    assert back.codes == e.codes, text
    assert all(_bits_equal(a, b) for a, b in zip(back.vals, e.vals)), text
    _check_parse(parse_formula, text, ["a"])  # not SymPy syntax: a clean ParseError at most
