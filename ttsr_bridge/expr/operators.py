"""Operator registry: PySR's operator names, arities, safe NumPy semantics and printing forms.

Every operator has a fixed global integer id. Trees store ``-id`` in their prefix code list
(see :mod:`ttsr_bridge.expr.tree`), so ids must never be renumbered: new built-ins are appended,
user operators get ids from ``USER_ID_START`` upward via :func:`register_operator`.

Safe semantics follow SR.jl: an operator outside its domain (log/sqrt of a negative number,
division by zero, overflow) yields NaN/inf, and the evaluator marks the whole candidate as
invalid (loss = inf). Nothing here raises on bad numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = [
    "Operator",
    "OPERATORS",
    "BY_NAME",
    "get_operator",
    "register_operator",
    "OperatorSet",
    "USER_ID_START",
    "UnknownOperatorError",
]

USER_ID_START = 1000


@dataclass(frozen=True)
class Operator:
    """One operator.

    ``name`` is PySR's name (what a user writes in ``binary_operators=[...]``), ``julia`` the
    name SR.jl prints in ``string_tree``, ``sympy`` the SymPy function/operator name,
    ``infix`` the infix symbol for binary operators printed as ``(a op b)`` (None → ``f(a, b)``).
    ``numpy`` is the vectorised implementation (float64 arrays in, float64 array out).
    """

    id: int
    name: str
    arity: int
    numpy: Callable[..., np.ndarray] = field(compare=False, repr=False)
    julia: str = ""
    sympy: str = ""
    infix: str | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.arity not in (1, 2):
            raise ValueError(f"operator {self.name!r}: arity must be 1 or 2, got {self.arity}")
        if not self.julia:
            object.__setattr__(self, "julia", self.name)
        if not self.sympy:
            object.__setattr__(self, "sympy", self.name)


def _safe_log(x):
    with np.errstate(all="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)


def _safe_log2(x):
    with np.errstate(all="ignore"):
        return np.where(x > 0, np.log2(np.where(x > 0, x, 1.0)), np.nan)


def _safe_log10(x):
    with np.errstate(all="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


def _safe_log1p(x):
    with np.errstate(all="ignore"):
        return np.where(x > -1, np.log1p(np.where(x > -1, x, 0.0)), np.nan)


def _safe_sqrt(x):
    with np.errstate(all="ignore"):
        return np.where(x >= 0, np.sqrt(np.abs(x)), np.nan)


def _safe_pow(x, y):
    """SR.jl's ``safe_pow``: integer exponents allow negative bases; 0^negative is NaN;
    a non-integer exponent of a negative base is NaN."""
    with np.errstate(all="ignore"):
        yint = np.equal(np.floor(y), y)
        bad = (~yint & (x < 0)) | ((x == 0) & (y < 0))
        out = np.power(np.where(bad, 1.0, x), y)
        return np.where(bad, np.nan, out)


def _safe_asin(x):
    with np.errstate(all="ignore"):
        return np.where(np.abs(x) <= 1, np.arcsin(np.clip(x, -1, 1)), np.nan)


def _safe_acos(x):
    with np.errstate(all="ignore"):
        return np.where(np.abs(x) <= 1, np.arccos(np.clip(x, -1, 1)), np.nan)


def _safe_acosh(x):
    with np.errstate(all="ignore"):
        return np.where(x >= 1, np.arccosh(np.where(x >= 1, x, 1.0)), np.nan)


def _safe_atanh(x):
    with np.errstate(all="ignore"):
        inside = np.abs(x) < 1
        return np.where(inside, np.arctanh(np.where(inside, x, 0.0)), np.nan)


def _err(fn):
    def wrapped(*args):
        with np.errstate(all="ignore"):
            return fn(*args)

    wrapped.__name__ = getattr(fn, "__name__", "op")
    return wrapped


# Fixed ids. Never renumber: trees, traces and trained models refer to them.
_BUILTINS: list[Operator] = [
    Operator(1, "+", 2, _err(np.add), julia="+", sympy="Add", infix="+", aliases=("add", "plus")),
    Operator(2, "-", 2, _err(np.subtract), julia="-", sympy="Sub", infix="-", aliases=("sub", "minus")),
    Operator(3, "*", 2, _err(np.multiply), julia="*", sympy="Mul", infix="*", aliases=("mult", "mul", "times")),
    Operator(4, "/", 2, _err(np.divide), julia="/", sympy="Div", infix="/", aliases=("div", "divide")),
    Operator(5, "^", 2, _safe_pow, julia="^", sympy="Pow", infix="^", aliases=("pow", "**", "safe_pow")),
    Operator(6, "max", 2, _err(np.maximum)),
    Operator(7, "min", 2, _err(np.minimum)),
    Operator(8, "mod", 2, _err(np.mod)),
    Operator(20, "neg", 1, _err(np.negative), sympy="neg"),  # SR.jl function `neg`: prints neg(x)
    Operator(21, "square", 1, _err(np.square)),
    Operator(22, "cube", 1, _err(lambda x: x * x * x)),
    Operator(23, "exp", 1, _err(np.exp)),
    Operator(24, "log", 1, _safe_log, aliases=("safe_log", "ln")),
    Operator(25, "log2", 1, _safe_log2, aliases=("safe_log2",)),
    Operator(26, "log10", 1, _safe_log10, aliases=("safe_log10",)),
    Operator(27, "log1p", 1, _safe_log1p, aliases=("safe_log1p",)),
    Operator(28, "sqrt", 1, _safe_sqrt, aliases=("safe_sqrt",)),
    Operator(29, "sin", 1, _err(np.sin)),
    Operator(30, "cos", 1, _err(np.cos)),
    Operator(31, "tan", 1, _err(np.tan)),
    Operator(32, "sinh", 1, _err(np.sinh)),
    Operator(33, "cosh", 1, _err(np.cosh)),
    Operator(34, "tanh", 1, _err(np.tanh)),
    Operator(35, "asin", 1, _safe_asin, sympy="asin", aliases=("arcsin", "safe_asin")),
    Operator(36, "acos", 1, _safe_acos, sympy="acos", aliases=("arccos", "safe_acos")),
    Operator(37, "atan", 1, _err(np.arctan), sympy="atan", aliases=("arctan",)),
    Operator(38, "asinh", 1, _err(np.arcsinh), sympy="asinh", aliases=("arcsinh",)),
    Operator(39, "acosh", 1, _safe_acosh, sympy="acosh", aliases=("arccosh", "safe_acosh")),
    Operator(40, "atanh", 1, _safe_atanh, sympy="atanh", aliases=("arctanh", "safe_atanh")),
    Operator(41, "abs", 1, _err(np.abs), sympy="Abs"),
    Operator(42, "inv", 1, _err(lambda x: 1.0 / x)),
    Operator(43, "sign", 1, _err(np.sign)),
    Operator(44, "relu", 1, _err(lambda x: np.maximum(x, 0.0))),
]

OPERATORS: dict[int, Operator] = {}
BY_NAME: dict[str, Operator] = {}


def _add(op: Operator) -> None:
    if op.id in OPERATORS:
        raise ValueError(f"operator id {op.id} already registered ({OPERATORS[op.id].name})")
    if op.name in BY_NAME:
        raise ValueError(f"operator name {op.name!r} already registered")
    OPERATORS[op.id] = op
    BY_NAME[op.name] = op
    for alias in op.aliases:
        BY_NAME.setdefault(alias, op)


for _op in _BUILTINS:
    _add(_op)


class UnknownOperatorError(ValueError, KeyError):
    """An operator name that is not registered (a ``ValueError`` for callers validating input,
    a ``KeyError`` for lookups)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def get_operator(name: str) -> Operator:
    """Look an operator up by PySR name or alias; raise :class:`UnknownOperatorError` with the
    known names."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        known = sorted(op.name for op in OPERATORS.values())
        raise UnknownOperatorError(f"unknown operator {name!r}; known operators: {known}") from None


def register_operator(
    name: str, arity: int, numpy_fn: Callable[..., np.ndarray], *, sympy: str = "", julia: str = ""
) -> Operator:
    """Register a user operator (evaluated by NumPy, not by the compiled evaluator)."""
    if name in BY_NAME:
        return BY_NAME[name]
    new_id = max([USER_ID_START - 1, *OPERATORS]) + 1
    op = Operator(new_id, name, arity, _err(numpy_fn), julia=julia or name, sympy=sympy or name)
    _add(op)
    return op


@dataclass(frozen=True)
class OperatorSet:
    """The operators a search may use, split by arity (PySR's ``binary_operators`` /
    ``unary_operators``)."""

    binary: tuple[Operator, ...]
    unary: tuple[Operator, ...]

    @classmethod
    def from_names(cls, binary: tuple[str, ...] | list[str], unary: tuple[str, ...] | list[str] = ()) -> "OperatorSet":
        bops = tuple(get_operator(n) for n in binary)
        uops = tuple(get_operator(n) for n in unary)
        for op in bops:
            if op.arity != 2:
                raise ValueError(f"{op.name!r} is unary but was given as a binary operator")
        for op in uops:
            if op.arity != 1:
                raise ValueError(f"{op.name!r} is binary but was given as a unary operator")
        if len(set(bops)) != len(bops) or len(set(uops)) != len(uops):
            raise ValueError("duplicate operators in the operator set")
        return cls(bops, uops)

    @property
    def all(self) -> tuple[Operator, ...]:
        return self.binary + self.unary

    @property
    def binary_ids(self) -> tuple[int, ...]:
        return tuple(op.id for op in self.binary)

    @property
    def unary_ids(self) -> tuple[int, ...]:
        return tuple(op.id for op in self.unary)

    def names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(o.name for o in self.binary), tuple(o.name for o in self.unary)


def arity_of_code(code: int) -> int:
    """Arity of a prefix code (0 for leaves)."""
    return OPERATORS[-code].arity if code < 0 else 0
