"""Printing expressions: SR.jl's ``string_tree`` and a SymPy-syntax infix form.

:func:`string_tree` reproduces DynamicExpressions.jl's ``string_tree`` as SR.jl calls it
(``InterfaceDynamicExpressions.jl``):

* binary operators whose Julia name starts with ``+ - * / ^`` (and ``. > < =``, ``!=``) are
  printed infix and bracketed: ``(l op r)``; other binary operators as ``name(l, r)``;
  unary operators as ``name(a)``; an argument of a function call loses one pair of outer
  brackets (``sin(x1 + x2)``, not ``sin((x1 + x2))``), and so does the whole string
  (``(x1 * 2.5) + sin(x2)``);
* SR.jl's safe operators print under their plain names (``safe_pow`` → ``^``,
  ``safe_log`` → ``log``, ...); PySR's ``neg`` is SR.jl's function ``neg`` and prints
  ``neg(x1)``;
* constants print with Julia's ``string(::Float64)`` (:func:`format_julia_float`), a negative
  constant with its sign and no brackets: ``(x1 * -2.5)``;
* ``pretty=False`` (the trace form): variables ``x1, x2, ...`` (1-based) unless
  ``variable_names`` are given; ``pretty=True``: constants with ``%.5g`` (SR.jl's default
  ``print_precision``) and unnamed variables with subscripts ``x₁``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .operators import OPERATORS, Operator
from .tree import Expr

__all__ = ["format_julia_float", "string_tree", "to_infix"]

_INFIX_FIRST_CHARS = ("+", "-", "*", "/", "^", ".", ">", "<", "=")
_SUBSCRIPTS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
_PRETTY_PRECISION = 5  # SR.jl Options.print_precision default


# ================================================================================================
# Julia Float64 formatting
# ================================================================================================
def _shortest_digits(v: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of finite ``|v| > 0`` and the exponent ``e`` with
    ``|v| == int(digits) * 10**e`` (no trailing zeros in ``digits``)."""
    text = repr(abs(v))  # Python's repr is the shortest round-trip form, as Julia's Ryu
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text) if exp_text else 0
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    exponent -= len(frac_part)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    return stripped, exponent


def format_julia_float(v: float) -> str:
    """``string(v::Float64)`` as Julia prints it: ``1.0``, ``0.1``, ``-2.5``, ``100000.0``,
    ``1.0e6``, ``1.234567e6``, ``0.0001``, ``1.0e-5``, ``Inf``, ``-Inf``, ``NaN``, ``-0.0``.

    Julia (base/ryu/shortest.jl) writes the shortest round-trip digits, in plain form when the
    decimal point position ``pt = nexp + ndigits`` satisfies ``-4 < pt <= 6`` and in
    scientific form ``d.ddde[-]x`` otherwise."""
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, v) < 0 else ""
    if v == 0.0:
        return sign + "0.0"
    digits, nexp = _shortest_digits(v)
    olength = len(digits)
    pt = nexp + olength
    if -4 < pt <= 6:
        if pt <= 0:
            body = "0." + "0" * (-pt) + digits
        elif pt >= olength:
            body = digits + "0" * nexp + ".0"
        else:
            body = digits[:pt] + "." + digits[pt:]
    else:
        frac = digits[1:] or "0"
        body = f"{digits[0]}.{frac}e{pt - 1}"
    return sign + body


def _format_pretty_float(v: float) -> str:
    """SR.jl's pretty constant: ``@sprintf("%.5g", v)`` (Julia prints ``Inf``/``NaN``)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return f"{v:.{_PRETTY_PRECISION}g}"


# ================================================================================================
# string_tree
# ================================================================================================
def _strip_brackets(s: str) -> str:
    """DynamicExpressions' ``strip_brackets``: drop one outer ``(...)`` pair."""
    if len(s) >= 2 and s[0] == "(" and s[-1] == ")":
        return s[1:-1]
    return s


def _is_infix(operator: Operator) -> bool:
    name = operator.julia
    return name.startswith(_INFIX_FIRST_CHARS) or name == "!="


def _variable_string(code: int, variable_names: Sequence[str] | None, pretty: bool) -> str:
    if variable_names is not None and code <= len(variable_names):
        return variable_names[code - 1]
    if pretty:
        return "x" + str(code).translate(_SUBSCRIPTS)
    return f"x{code}"


def _combine(operator: Operator, args: list[str]) -> str:
    """One operator node printed from its children's strings (left to right)."""
    if operator.arity == 2 and _is_infix(operator):
        return f"({args[0]} {operator.julia} {args[1]})"
    return operator.julia + "(" + ", ".join(_strip_brackets(a) for a in args) + ")"


def string_tree(
    expr: Expr, variable_names: Sequence[str] | None = None, *, pretty: bool = False
) -> str:
    """SR.jl's ``string_tree(tree, options; pretty)`` of ``expr`` (see the module docstring).

    Raises ``ValueError`` for a malformed code list."""
    fmt = _format_pretty_float if pretty else format_julia_float
    stack: list[str] = []
    # Right to left over the prefix codes: children are complete when their parent is reached,
    # so deep trees need no recursion.
    for i in range(len(expr.codes) - 1, -1, -1):
        c = expr.codes[i]
        if c == 0:
            stack.append(fmt(expr.vals[i]))
        elif c > 0:
            stack.append(_variable_string(c, variable_names, pretty))
        else:
            operator = OPERATORS.get(-c)
            if operator is None:
                raise ValueError(f"unknown operator id {-c} at position {i}")
            if len(stack) < operator.arity:
                raise ValueError(f"malformed prefix code list at position {i}: {expr.codes!r}")
            args = [stack.pop() for _ in range(operator.arity)]  # left child first
            stack.append(_combine(operator, args))
    if len(stack) != 1:
        raise ValueError(f"malformed prefix code list: {expr.codes!r}")
    return _strip_brackets(stack[0])


# ================================================================================================
# SymPy-syntax infix
# ================================================================================================
def _sympy_float(v: float) -> str:
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "oo" if v > 0 else "(-oo)"
    text = repr(float(v))
    return f"({text})" if text.startswith("-") else text


def _infix_node(operator: Operator, args: list[str]) -> str:
    """SymPy-syntax text of one operator node; every compound result is bracketed."""
    name = operator.name
    a = args[0]
    if operator.arity == 2:
        b = args[1]
        if name in ("+", "-", "*", "/"):
            return f"({a} {name} {b})"
        if name == "^":
            return f"({a}**{b})"
        special = {"max": "Max", "min": "Min", "mod": "Mod"}
        return f"{special.get(name, operator.sympy)}({a}, {b})"
    unary = {
        "neg": f"(-{a})",
        "square": f"({a}**2)",
        "cube": f"({a}**3)",
        "inv": f"(1/{a})",
        "log2": f"log({a}, 2)",
        "log10": f"log({a}, 10)",
        "log1p": f"log(1 + {a})",
        "relu": f"Max({a}, 0)",
        "abs": f"Abs({a})",
    }
    if name in unary:
        return unary[name]
    return f"{operator.sympy}({_strip_brackets(a)})"


def to_infix(expr: Expr, names: Sequence[str] | None = None) -> str:
    """SymPy-syntax text of ``expr`` over ``names`` (``x1, x2, ...`` when None): ``**`` for
    powers, ``Max``/``Min``/``Mod``/``Abs``, ``log(a, 2)`` for ``log2``, ``oo``/``nan``.
    Fully bracketed so that it reads back unambiguously (:func:`.parser.parse_formula`)."""
    stack: list[str] = []
    for i in range(len(expr.codes) - 1, -1, -1):
        c = expr.codes[i]
        if c == 0:
            stack.append(_sympy_float(expr.vals[i]))
        elif c > 0:
            stack.append(names[c - 1] if names is not None and c <= len(names) else f"x{c}")
        else:
            operator = OPERATORS.get(-c)
            if operator is None or len(stack) < operator.arity:
                raise ValueError(f"malformed prefix code list at position {i}: {expr.codes!r}")
            args = [stack.pop() for _ in range(operator.arity)]
            stack.append(_infix_node(operator, args))
    if len(stack) != 1:
        raise ValueError(f"malformed prefix code list: {expr.codes!r}")
    return _strip_brackets(stack[0])
