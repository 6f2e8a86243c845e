"""Hypothesis fuzzing of the parsers and of the string_tree round trip."""

from __future__ import annotations

import math

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


@st.composite
def trees(draw, max_ops: int = 20):
    """Random well-formed prefix code lists with arbitrary float constants."""
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
            vals.append(draw(_floats))
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
