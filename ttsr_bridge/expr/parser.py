"""Reading expressions from text: SR.jl ``string_tree`` output and SymPy-syntax formulas.

A hand-written tokenizer and a precedence-climbing parser (never ``eval``/``sympify``):

* :func:`parse_tree` reads what :func:`.printer.string_tree` (and SR.jl) prints, plus general
  infix text: ``+ - * / ^`` (``**`` too) with the usual precedence (``^`` binds tighter than a
  unary minus and is right-associative), function calls by Julia/PySR operator name
  (``sin(x1)``, ``max(a, b)``, ``neg(a)``), variables ``x1..xn`` (1-based; also ``x₁``) or the
  given names, numbers, ``Inf`` and ``NaN``. ``string_tree`` → ``parse_tree`` is exact (same
  codes, bit-identical constants; NaN reads back as NaN). It also reads the Julia Float32
  literals SR.jl prints for ``precision=32`` searches (PySR's default): ``2.5f0``, ``1.0f-5``,
  ``Inf32``, ``NaN32``; their value is the Float32 widened exactly to float64 (``0.1f0`` is
  0.10000000149011612, what SR.jl's tree holds). Float16 constants are rejected.
* :func:`parse_formula` reads SymPy-syntax formulas over named variables (the benchmark files):
  ``**``/``^``, ``pow(a, b)``, ``pi``, ``E``, ``exp``, ``sqrt``, ``arcsin``, ``ln``, ``Abs``,
  ``Max``, ``log(a, b)`` (→ ``log(a) / log(b)``), integer and float literals (not Julia's
  ``2.5f0``, which is not SymPy syntax).

Unary minus (both parsers): applied directly to a number literal it gives a negative constant
(so SR.jl's ``(x1 * -2.5)`` and ``(-2.5 ^ x1)`` read back as the constant ``-2.5``; SR.jl never
prints a unary minus otherwise, its ``neg`` operator prints ``neg(a)``); applied to anything
else, ``-a`` becomes ``(-1.0 * a)``, the tree SR.jl prints for SymPy's ``-a == Mul(-1, a)`` and
one every operator set with ``*`` can express. Write ``neg(a)`` to get the ``neg`` operator.
In :func:`parse_formula` ``-2**x`` is ``-(2**x)`` as in Python; in :func:`parse_tree` a minus
sign glued to a literal binds first, as SR.jl's printing requires.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from .operators import BY_NAME, OPERATORS, Operator
from .tree import Expr

__all__ = ["ParseError", "float32_value", "parse_formula", "parse_tree"]

# Nesting deeper than this raises ParseError instead of exhausting Python's recursion limit
# (each level costs three Python frames).
MAX_NESTING = 200


class ParseError(ValueError):
    """Bad expression text; ``position`` is the 0-based character offset of the problem."""

    def __init__(self, message: str, text: str, position: int):
        self.position = position
        self.text = text
        snippet = text if len(text) <= 80 else text[max(0, position - 30) : position + 30]
        super().__init__(f"{message} at position {position} in {snippet!r}")


# ================================================================================================
# Tokenizer
# ================================================================================================
@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "num", "name", "op", "(", ")", ",", "end"
    text: str
    pos: int


_DIGITS = "0123456789"
# A Float64 literal (``2.5``, ``1.0e-5``) or a Julia Float32 one (``2.5f0``, ``1.0f-5``: the
# exponent marker is ``f``). A number glued to a name is never valid otherwise (there is no
# implicit multiplication), so reading ``2.5f0`` as one token cannot shadow a variable ``f0``.
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+|f[+-]?[0-9]+)?")
_NAME = re.compile(r"[^\W\d]\w*[₀-₉]*", re.UNICODE)
_OPERATORS = ("**", "+", "-", "*", "/", "^")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        # ASCII digits only: str.isdigit() is also true for "²" and other Unicode digits.
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            m = _NUMBER.match(text, i)
            assert m is not None  # a digit or ".digit" always starts a number
            tokens.append(_Token("num", m.group(), i))
            i = m.end()
            continue
        m = _NAME.match(text, i)
        if m is not None:
            tokens.append(_Token("name", m.group(), i))
            i = m.end()
            continue
        if ch in "(),":
            tokens.append(_Token(ch, ch, i))
            i += 1
            continue
        for sym in _OPERATORS:
            if text.startswith(sym, i):
                tokens.append(_Token("op", "^" if sym == "**" else sym, i))
                i += len(sym)
                break
        else:
            raise ParseError(f"unexpected character {ch!r}", text, i)
    tokens.append(_Token("end", "", n))
    return tokens


# ================================================================================================
# Tree fragments (prefix code lists under construction)
# ================================================================================================
@dataclass(slots=True)
class _Node:
    codes: list[int]
    vals: list[float]
    literal: bool = False  # a bare number literal (for the unary-minus rule)


def _const(v: float, literal: bool = False) -> _Node:
    return _Node([0], [v], literal)


def _apply(operator: Operator, *args: _Node) -> _Node:
    codes = [-operator.id]
    vals = [0.0]
    for a in args:
        codes += a.codes
        vals += a.vals
    return _Node(codes, vals)


_ADD, _SUB, _MUL, _DIV, _POW = (BY_NAME[s] for s in ("+", "-", "*", "/", "^"))
_LOG = BY_NAME["log"]
_BINARY_INFIX = {"+": (_ADD, 1), "-": (_SUB, 1), "*": (_MUL, 2), "/": (_DIV, 2)}


# ================================================================================================
# Parser
# ================================================================================================
@dataclass(frozen=True)
class _Grammar:
    """What names mean for one parser flavour."""

    variables: dict[str, int]  # name -> code (1-based feature)
    x_pattern: bool  # accept x1, x2, ... (and x₁) for unnamed features
    constants: dict[str, float]  # Inf, NaN / pi, E
    functions: dict[tuple[str, int], Operator]  # (name, arity) -> operator
    literal_minus_binds_first: bool  # parse_tree: "-2.5 ^ x" is (-2.5)^x
    julia_floats: bool  # parse_tree: Float32 literals 2.5f0; Float16 reported as unsupported


class _Parser:
    def __init__(self, text: str, grammar: _Grammar):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.g = grammar
        self.depth = 0

    # ---- helpers ---------------------------------------------------------------------------
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def error(self, message: str, tok: _Token | None = None) -> ParseError:
        return ParseError(message, self.text, (tok or self.tok).pos)

    def expect(self, kind: str) -> _Token:
        t = self.tok
        if t.kind != kind:
            found = "end of input" if t.kind == "end" else repr(t.text)
            raise self.error(f"expected {kind!r}, found {found}")
        self.i += 1
        return t

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(f"expression nested deeper than {MAX_NESTING} levels")

    # ---- grammar ---------------------------------------------------------------------------
    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise self.error("empty expression")
        node = self.expression(0)
        if self.tok.kind != "end":
            raise self.error(f"unexpected {self.tok.text!r}")
        return Expr(node.codes, node.vals)

    def expression(self, min_prec: int) -> _Node:
        """Left-associative ``+ -`` (precedence 1) and ``* /`` (2) by precedence climbing."""
        self.enter()
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in _BINARY_INFIX:
            operator, prec = _BINARY_INFIX[self.tok.text]
            if prec < min_prec:
                break
            self.i += 1
            right = self.expression(prec + 1)
            left = _apply(operator, left, right)
        self.depth -= 1
        return left

    def unary(self) -> _Node:
        """Prefix ``-``/``+`` (weaker than ``^``), then a power."""
        t = self.tok
        if t.kind == "op" and t.text in "+-":
            nxt = self.tokens[self.i + 1]
            if t.text == "-" and self.g.literal_minus_binds_first and self._is_literal(nxt):
                self.i += 1
                base = self.primary()
                base = _const(-base.vals[0], literal=True)
                return self.power_rest(base)
            self.i += 1
            self.enter()
            operand = self.unary()
            self.depth -= 1
            if t.text == "+":
                return operand
            if operand.literal:
                return _const(-operand.vals[0], literal=True)
            return _apply(_MUL, _const(-1.0), operand)
        return self.power_rest(self.primary())

    def _is_literal(self, t: _Token) -> bool:
        return t.kind == "num" or (
            t.kind == "name"
            and t.text in self.g.constants
            and t.text not in self.g.variables
            and self.tokens[self.i + 2].kind != "("
        )

    def power_rest(self, base: _Node) -> _Node:
        """``base ^ unary`` (right-associative: the exponent is itself a unary/power)."""
        if self.tok.kind == "op" and self.tok.text == "^":
            self.i += 1
            self.enter()
            exponent = self.unary()
            self.depth -= 1
            return _apply(_POW, base, exponent)
        return base

    def primary(self) -> _Node:
        t = self.tok
        if t.kind == "num":
            self.i += 1
            return _const(self.number(t), literal=True)
        if t.kind == "(":
            self.i += 1
            node = self.expression(0)
            self.expect(")")
            # "-(2)" is the constant -2: a bracketed bare constant still counts as a literal.
            node.literal = len(node.codes) == 1 and node.codes[0] == 0
            return node
        if t.kind == "name":
            self.i += 1
            if self.tok.kind == "(":
                return self.call(t)
            return self.name(t)
        found = "end of input" if t.kind == "end" else repr(t.text)
        raise self.error(f"expected a number, name or '(', found {found}")

    def number(self, t: _Token) -> float:
        """Value of a number token: a Float64 literal, or a Julia Float32 one (``2.5f0``)."""
        if "f" not in t.text:
            return float(t.text)  # the regex only matches valid float syntax
        if not self.g.julia_floats:
            plain = t.text.replace("f", "e")
            raise self.error(
                f"{t.text!r} is a Julia Float32 literal, not SymPy syntax (write {plain})", t
            )
        return float32_value(t.text.replace("f", "e"))

    def name(self, t: _Token) -> _Node:
        g = self.g
        if t.text in g.variables:
            return _Node([g.variables[t.text]], [0.0])
        if t.text in g.constants:
            return _const(g.constants[t.text], literal=True)
        if g.x_pattern:
            code = _x_feature(t.text)
            if code is not None:
                return _Node([code], [0.0])
        if g.julia_floats and t.text in _FLOAT16_NAMES:
            raise self.error(_FLOAT16_MESSAGE.format(t.text), t)
        raise self.error(f"unknown name {t.text!r}", t)

    def call(self, t: _Token) -> _Node:
        self.expect("(")
        args = [self.expression(0)]
        while self.tok.kind == ",":
            self.i += 1
            args.append(self.expression(0))
        self.expect(")")
        key = (t.text, len(args))
        if key == ("log", 2) and ("log", 2) not in self.g.functions:
            # SymPy's log(a, b): log base b.
            return _apply(_DIV, _apply(_LOG, args[0]), _apply(_LOG, args[1]))
        operator = self.g.functions.get(key)
        if operator is None:
            arities = sorted(a for (name, a) in self.g.functions if name == t.text)
            if arities:
                raise self.error(
                    f"function {t.text!r} takes {' or '.join(map(str, arities))} argument(s), "
                    f"got {len(args)}",
                    t,
                )
            if self.g.julia_floats and t.text in _FLOAT16_NAMES:
                raise self.error(_FLOAT16_MESSAGE.format(t.text + "(...)"), t)
            raise self.error(f"unknown function {t.text!r}", t)
        return _apply(operator, *args)


# Julia prints Float16 values as ``Float16(2.5)``, ``Inf16``, ``NaN16``: SR.jl's precision=16.
_FLOAT16_NAMES = frozenset({"Float16", "Inf16", "NaN16"})
_FLOAT16_MESSAGE = (
    "Float16 constant {} is not supported (SR.jl precision=16 trees): "
    "only Float64 and Float32 (2.5f0, Inf32, NaN32) constants are read"
)


def float32_value(text: str) -> float:
    """The Float32 nearest to the decimal ``text`` (ties to even), widened exactly to float64.

    ``text`` is Python float syntax (``"1.0e-5"``; a Julia ``1.0f-5`` with ``f`` → ``e``).
    Out-of-range magnitudes give ±inf and tiny ones subnormals or ±0 (IEEE round to nearest).
    Rounded once, straight from the decimal (as C's ``strtof``): going through float64, as
    ``np.float32(text)`` does, rounds twice and is one ulp off when the float64 lands exactly
    on a Float32 midpoint that the decimal itself is not on. For the shortest digits Julia
    prints, both agree."""
    wide = float(text)  # correctly rounded float64
    with np.errstate(over="ignore"):  # overflow to ±inf is the intended result
        narrow = np.float32(wide)
        if float(narrow) == wide or not math.isfinite(wide):
            return float(narrow)
        # The Float32 on the other side of ``wide``; if ``wide`` sits exactly halfway, the
        # exact decimal decides (ties-to-even is only right when the decimal is the midpoint).
        narrow_v = _float32_position(narrow)
        other = np.nextafter(narrow, np.float32(math.inf if wide > narrow_v else -math.inf))
    if wide - narrow_v != _float32_position(other) - wide:  # exact: the operands are close
        return float(narrow)
    exact, wide_exact = Decimal(text), Decimal(wide)
    if exact == wide_exact:
        return float(narrow)
    beyond = exact > wide_exact if wide > narrow_v else exact < wide_exact
    return float(other) if beyond else float(narrow)


def _float32_position(v: np.float32) -> float:
    """``v`` as float64, with ±inf standing at ±2^128 (the rounding boundary Float32 overflow
    uses: values at or past max + half an ulp round to inf)."""
    x = float(v)
    return math.copysign(2.0**128, x) if math.isinf(x) else x


_X_NAME = re.compile(r"x(?:([1-9][0-9]*)|([₁-₉][₀-₉]*))\Z")


def _x_feature(name: str) -> int | None:
    """Code of ``x<k>``/``x<subscript k>`` (k >= 1), or None."""
    m = _X_NAME.match(name)
    if m is None:
        return None
    digits = m.group(1) or m.group(2).translate(str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789"))
    return int(digits)


# ================================================================================================
# Grammars
# ================================================================================================
def _function_table(extra: dict[str, str]) -> dict[tuple[str, int], Operator]:
    """(name, arity) -> operator for every registered operator: Julia name, PySR name and
    aliases, plus ``extra`` spellings (name -> PySR name)."""
    table: dict[tuple[str, int], Operator] = {}
    for operator in OPERATORS.values():
        for name in (operator.julia, operator.name, *operator.aliases):
            if name[:1].isalpha() or name[:1] == "_":
                table.setdefault((name, operator.arity), operator)
    for name, target in extra.items():
        operator = BY_NAME[target]
        table[(name, operator.arity)] = operator
    return table


_SYMPY_SPELLINGS = {
    "Abs": "abs",
    "Max": "max",
    "Min": "min",
    "Mod": "mod",
    "pow": "^",
    "asin": "asin",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "ln": "log",
    "sign": "sign",
}


def _variable_table(names: Sequence[str] | None) -> dict[str, int]:
    if names is None:
        return {}
    table: dict[str, int] = {}
    for k, name in enumerate(names):
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise ValueError(f"variable name {name!r} is not an identifier")
        table.setdefault(name, k + 1)
    return table


def parse_tree(text: str, variable_names: Sequence[str] | None = None) -> Expr:
    """Read SR.jl ``string_tree`` output (or general infix) into an :class:`Expr`.

    Variables are ``x1..xn`` (1-based) and, when given, ``variable_names`` (feature ``k`` is
    ``variable_names[k]``; ``x<k>`` stays valid for features beyond the list, as SR.jl prints
    them). Raises :class:`ParseError` on bad input."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    grammar = _Grammar(
        variables=_variable_table(variable_names),
        x_pattern=True,
        constants={"Inf": math.inf, "NaN": math.nan, "Inf32": math.inf, "NaN32": math.nan},
        functions=_TREE_FUNCTIONS,
        literal_minus_binds_first=True,
        julia_floats=True,
    )
    return _parse(text, grammar)


def parse_formula(text: str, variables: Sequence[str]) -> Expr:
    """Read a SymPy-syntax formula over the named ``variables`` (feature ``k`` is
    ``variables[k]``) into an :class:`Expr`. ``pi`` and ``E`` are constants unless they are
    variable names. Raises :class:`ParseError` on bad input."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    grammar = _Grammar(
        variables=_variable_table(list(variables)),
        x_pattern=False,
        constants={"pi": math.pi, "E": math.e},
        functions=_FORMULA_FUNCTIONS,
        literal_minus_binds_first=False,
        julia_floats=False,
    )
    return _parse(text, grammar)


def _parse(text: str, grammar: _Grammar) -> Expr:
    try:
        return _Parser(text, grammar).parse()
    except RecursionError:  # the caller's own stack was already deep
        raise ParseError("expression nested too deeply", text, 0) from None


# Built once at import; operators registered later are looked up through _functions_now().
_TREE_FUNCTIONS_BASE = _function_table({})
_FORMULA_FUNCTIONS_BASE = _function_table(_SYMPY_SPELLINGS)


class _LiveTable(dict):
    """A function table that also sees operators registered after import."""

    def __init__(self, base: dict, extra: dict[str, str]):
        super().__init__(base)
        self._extra = extra
        self._n_ops = len(OPERATORS)

    def _refresh(self) -> None:
        if len(OPERATORS) != self._n_ops:
            self.update(_function_table(self._extra))
            self._n_ops = len(OPERATORS)

    def get(self, key, default=None):  # type: ignore[override]
        self._refresh()
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self._refresh()
        return super().__contains__(key)

    def __iter__(self):
        self._refresh()
        return super().__iter__()


_TREE_FUNCTIONS = _LiveTable(_TREE_FUNCTIONS_BASE, {})
_FORMULA_FUNCTIONS = _LiveTable(_FORMULA_FUNCTIONS_BASE, _SYMPY_SPELLINGS)
