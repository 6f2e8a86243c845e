"""SymPy conversion and "exact recovery" checks.

:func:`to_sympy` builds SymPy objects node by node (never ``sympify`` on text).
:func:`equivalent` decides whether a found expression is the true one, PySR/SRBench style:
after rounding near-integer / small-rational constants, ``simplify(a - b) == 0`` or
``simplify(a / b) == 1``. A quick numeric comparison on random points rejects most wrong
candidates first; the symbolic part runs in a worker process with a timeout, because
``simplify`` can run for minutes (a timeout counts as "not equivalent").

With ``domains`` (each variable's sampling range), a variable whose range lies in ``x >= 0``
(``x <= 0``) becomes a positive (negative) SymPy symbol, so that identities that hold only there
are recognised (``log(x**2)/2 == log(x)``, ``exp(log(x*x)/4) == sqrt(x)``,
``2*log(x + 1) == log(x**2 + 2*x + 1)``), and the numeric pre-check samples inside the ranges.

SymPy is imported inside the functions so that ``import ttsr_bridge.expr`` stays light.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import math
import multiprocessing
import multiprocessing.util
import threading
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Union

import numpy as np

from .operators import OPERATORS
from .tree import Expr

if TYPE_CHECKING:  # pragma: no cover
    import sympy

__all__ = ["equivalent", "round_constants", "to_sympy"]

_MAX_DENOMINATOR = 12  # rationals PySR-style checks accept as "exact" constants (1/2, 2/3, ...)


# ================================================================================================
# Expr -> SymPy
# ================================================================================================
def _unary_sympy(name: str, a, sp, operator):
    table = {
        "neg": lambda: -a,
        "square": lambda: a**2,
        "cube": lambda: a**3,
        "exp": lambda: sp.exp(a),
        "log": lambda: sp.log(a),
        "log2": lambda: sp.log(a, 2),
        "log10": lambda: sp.log(a, 10),
        "log1p": lambda: sp.log(1 + a),
        "sqrt": lambda: sp.sqrt(a),
        "sin": lambda: sp.sin(a),
        "cos": lambda: sp.cos(a),
        "tan": lambda: sp.tan(a),
        "sinh": lambda: sp.sinh(a),
        "cosh": lambda: sp.cosh(a),
        "tanh": lambda: sp.tanh(a),
        "asin": lambda: sp.asin(a),
        "acos": lambda: sp.acos(a),
        "atan": lambda: sp.atan(a),
        "asinh": lambda: sp.asinh(a),
        "acosh": lambda: sp.acosh(a),
        "atanh": lambda: sp.atanh(a),
        "abs": lambda: sp.Abs(a),
        "inv": lambda: 1 / a,
        "sign": lambda: sp.sign(a),
        "relu": lambda: sp.Max(a, 0),
    }
    fn = table.get(name)
    return fn() if fn is not None else sp.Function(operator.sympy)(a)


def _binary_sympy(name: str, a, b, sp, operator):
    table = {
        "+": lambda: a + b,
        "-": lambda: a - b,
        "*": lambda: a * b,
        "/": lambda: a / b,
        "^": lambda: a**b,
        "max": lambda: sp.Max(a, b),
        "min": lambda: sp.Min(a, b),
        "mod": lambda: sp.Mod(a, b),
    }
    fn = table.get(name)
    return fn() if fn is not None else sp.Function(operator.sympy)(a, b)


def _sympy_constant(v: float, sp):
    if math.isnan(v):
        return sp.nan
    if math.isinf(v):
        return sp.oo if v > 0 else -sp.oo
    if v == int(v) and abs(v) < 2**53:
        return sp.Integer(int(v))  # integer-valued floats (2.0 from "x**2") stay exact
    return sp.Float(v)  # 53-bit precision: exactly the binary value


def to_sympy(expr: Expr, names: Sequence[str] | None = None, *, real: bool = True):
    """SymPy expression of ``expr``; feature ``k`` is the symbol ``names[k]`` (``x{k+1}`` when
    ``names`` is None or too short). Symbols are real when ``real`` (so that ``sqrt(x**2)`` is
    ``Abs(x)``). Integer-valued constants become SymPy Integers, others Floats."""
    import sympy as sp

    symbols: dict[int, object] = {}

    def symbol(code: int):
        if code not in symbols:
            name = names[code - 1] if names is not None and code <= len(names) else f"x{code}"
            symbols[code] = sp.Symbol(name, real=True) if real else sp.Symbol(name)
        return symbols[code]

    stack: list = []
    for i in range(len(expr.codes) - 1, -1, -1):
        c = expr.codes[i]
        if c == 0:
            stack.append(_sympy_constant(expr.vals[i], sp))
        elif c > 0:
            stack.append(symbol(c))
        else:
            operator = OPERATORS.get(-c)
            if operator is None or len(stack) < operator.arity:
                raise ValueError(f"malformed expression at position {i}: codes={expr.codes!r}")
            if operator.arity == 1:
                stack.append(_unary_sympy(operator.name, stack.pop(), sp, operator))
            else:
                a = stack.pop()
                b = stack.pop()
                stack.append(_binary_sympy(operator.name, a, b, sp, operator))
    if len(stack) != 1:
        raise ValueError(f"malformed expression: codes={expr.codes!r}")
    return stack[0]


# ================================================================================================
# Constant rounding
# ================================================================================================
def _round_float(v: float, tol: float, sp):
    nearest = round(v)
    if abs(v - nearest) <= tol * max(1.0, abs(v)):
        return sp.Integer(int(nearest))
    frac = Fraction(v).limit_denominator(_MAX_DENOMINATOR)
    if abs(v - float(frac)) <= tol * max(1.0, abs(v)):
        return sp.Rational(frac.numerator, frac.denominator)
    return None


def round_constants(sym, tol: float = 1e-6):
    """Replace each Float in ``sym`` that is within relative ``tol`` of an integer or of a
    rational with denominator <= 12 by that exact number (``2.0000001`` → ``2``, ``0.4999999``
    → ``1/2``); other Floats are kept."""
    import sympy as sp

    if tol < 0:
        raise ValueError("tol must be >= 0")
    replacements = {}
    for f in sym.atoms(sp.Float):
        exact = _round_float(float(f), tol, sp)
        if exact is not None:
            replacements[f] = exact
    return sym.xreplace(replacements) if replacements else sym


# ================================================================================================
# Equivalence
# ================================================================================================
SymOrExpr = Union[Expr, "sympy.Basic", str]


def _symbolic_equal(a, b, tol: float, logs: bool = False) -> bool:
    """The symbolic test proper (runs in the worker). ``logs``: when ``simplify`` alone fails,
    also compare after :func:`_log_normal` (used when symbols carry sign assumptions)."""
    import sympy as sp

    a = round_constants(a, tol)
    b = round_constants(b, tol)
    if a == b:
        return True
    diff = sp.simplify(a - b)
    if diff == 0 or _negligible(diff, tol):
        return True
    if logs and diff.has(sp.log):
        diff = sp.simplify(_log_normal(diff))
        if diff == 0 or _negligible(diff, tol):
            return True
    if b == 0:
        return False
    ratio = sp.simplify(a / b)
    if ratio == 1:
        return True
    # A constant ratio within tol of 1 (e.g. 12.566370614492316 / (4*pi)).
    return bool(ratio.is_number and abs(complex(ratio.evalf()) - 1) <= tol)


def _log_normal(e):
    """``e`` with each log's argument factored and the logs expanded as far as the symbols'
    assumptions allow (``force=False``: ``log(a*b) -> log(a) + log(b)`` only where SymPy can
    prove it, e.g. for positive factors): ``log(x**2 + 2*x + 1) -> 2*log(x + 1)`` for x > 0."""
    import sympy as sp

    e = e.replace(lambda n: isinstance(n, sp.log), lambda n: sp.log(sp.factor(n.args[0])))
    return sp.expand_log(e, deep=True, force=False)


def _negligible(diff, tol: float) -> bool:
    """True when ``diff`` vanishes once its numeric coefficients below ``tol`` are dropped:
    ``(12.566370614492316 - 4*pi)*r**2`` → ``1.3e-10*r**2`` → 0."""
    import sympy as sp

    d = sp.expand(diff.evalf())
    small = {f: 0 for f in d.atoms(sp.Float) if abs(float(f)) <= tol}
    if not small:
        return False
    return sp.simplify(d.xreplace(small)) == 0


def _worker_check(a, b, tol: float, logs: bool = False) -> bool:
    return _symbolic_equal(a, b, tol, logs)


def _worker_ready() -> bool:
    import sympy  # noqa: F401  (the import is the slow part of a worker's start)

    return True


_STARTUP_TIMEOUT = 120.0  # a fresh worker imports SymPy and this package (seconds on a busy host)


_POOL: cf.ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _get_pool() -> cf.ProcessPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            # spawn: a clean interpreter (no inherited threads/locks from the caller).
            pool = cf.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
            # Wait for the worker to start here, so that its start-up time does not count
            # against the caller's timeout.
            pool.submit(_worker_ready).result(timeout=_STARTUP_TIMEOUT)
            _POOL = pool
        return _POOL


def _kill_pool() -> None:
    """Stop a worker stuck in SymPy: terminate its process and forget the pool."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is None:
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.terminate()  # the worker this module started for the pool
    pool.shutdown(wait=True, cancel_futures=True)


atexit.register(_kill_pool)  # no worker outlives the interpreter
# concurrent.futures joins its pools' workers from threading's exit hooks, which run before
# atexit's, and at the end of a multiprocessing worker (where atexit never runs): a SymPy worker
# busy there would block that exit. Our hook is registered after concurrent.futures' own, so it
# runs first (the hooks run in reverse order) and terminates the SymPy worker.
_register_thread_exit = getattr(threading, "_register_atexit", None)
if _register_thread_exit is not None:
    _register_thread_exit(_kill_pool)
# Inside a multiprocessing worker (a parallel benchmark), the process's exit first joins every
# child process — the idle SymPy worker included, which would wait forever — and only runs
# finalizers of priority >= 0 before that join.
multiprocessing.util.Finalize(None, _kill_pool, exitpriority=100)


def _run_with_timeout(a, b, tol: float, timeout: float | None, logs: bool = False) -> bool:
    if timeout is None:
        return _symbolic_equal(a, b, tol, logs)
    future = _get_pool().submit(_worker_check, a, b, tol, logs)
    try:
        return bool(future.result(timeout=timeout))
    except cf.TimeoutError:
        _kill_pool()
        return False
    except cf.process.BrokenProcessPool:
        _kill_pool()
        return False


def _as_sympy(x: SymOrExpr, names: Sequence[str]):
    if isinstance(x, Expr):
        return to_sympy(x, names)
    if isinstance(x, str):
        from .parser import parse_formula

        return to_sympy(parse_formula(x, names), names)
    return x


def _numeric_mismatch(
    candidate: SymOrExpr,
    truth: SymOrExpr,
    names: Sequence[str],
    domains: Mapping[str, tuple[float, float]] | None = None,
) -> bool:
    """True when the two expressions clearly differ on random points (only checked when both
    are trees; points where either side is not finite are ignored, e.g. outside a log's domain).
    A variable named in ``domains`` is drawn from its range only."""
    if isinstance(truth, str):
        from .parser import ParseError, parse_formula

        try:
            truth = parse_formula(truth, names)
        except ParseError:
            return False
    if not (isinstance(candidate, Expr) and isinstance(truth, Expr)):
        return False
    from .evaluate import evaluate

    nfeat = max([len(names), *(c for c in candidate.codes + truth.codes if c > 0)], default=1)
    rng = np.random.default_rng(12345)
    X = np.concatenate(
        [rng.uniform(0.5, 3.0, size=(48, nfeat)), rng.uniform(-3.0, 3.0, size=(16, nfeat))]
    )
    for k, name in enumerate(names):
        if domains is not None and name in domains:
            low, high = domains[name]
            X[:, k] = rng.uniform(low, high, size=len(X))
    with np.errstate(all="ignore"):
        a = evaluate(candidate, X)
        b = evaluate(truth, X)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 8:
        return False  # not enough evidence either way: leave it to SymPy
    # Loose tolerance: constants within `tol` of exact values must not be rejected here.
    return not np.allclose(a[ok], b[ok], rtol=1e-3, atol=1e-6)


def equivalent(
    candidate: SymOrExpr,
    truth: SymOrExpr,
    names: Sequence[str],
    *,
    tol: float = 1e-6,
    timeout: float | None = 5.0,
    domains: Mapping[str, tuple[float, float]] | None = None,
) -> bool:
    """PySR-style exact recovery: True when ``candidate`` equals ``truth`` symbolically after
    rounding constants within ``tol`` (:func:`round_constants`).

    ``candidate``/``truth`` are :class:`Expr`, SymPy expressions, or (truth) a SymPy-syntax
    formula over ``names`` read by :func:`.parser.parse_formula`. A numeric pre-check on random
    points rejects clear mismatches without SymPy. The symbolic test runs in a worker process
    and gives False after ``timeout`` seconds (``timeout=None``: in this process, no limit).

    ``domains`` (optional) maps variable names to their sampling range ``(low, high)``: the
    expressions need only agree there. A variable with ``low >= 0`` is taken as positive
    (``high <= 0``: negative) — ``x = 0`` is a single point of a continuous range, and SymPy
    already ignores such points (``x/x == 1``) — so log and power identities that need positive
    arguments apply (``log(x*x)/2 == log(x)``, ``exp(log(x*x)/4) == sqrt(x)``); a range that
    spans 0 leaves the variable merely real. The numeric pre-check then samples inside the
    ranges. Without ``domains`` the behaviour is as before."""
    names = list(names)
    checked = _check_domains(domains, names)
    if _numeric_mismatch(candidate, truth, names, checked):
        return False
    a = _as_sympy(candidate, names)
    b = _as_sympy(truth, names)
    if checked:
        a = _with_domains(a, checked)
        b = _with_domains(b, checked)
    return _run_with_timeout(a, b, tol, timeout, logs=bool(checked))


def _check_domains(
    domains: Mapping[str, tuple[float, float]] | None, names: Sequence[str]
) -> dict[str, tuple[float, float]] | None:
    """``domains`` as ``{name: (low, high)}`` floats; ValueError for unknown names, bounds that
    are not finite numbers, or ``low > high``."""
    if domains is None:
        return None
    out: dict[str, tuple[float, float]] = {}
    for name, bounds in domains.items():
        if name not in names:
            raise ValueError(f"domains: {name!r} is not one of the variables {list(names)}")
        try:
            low, high = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise ValueError(f"domains: {name!r} needs (low, high), got {bounds!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"domains: {name!r} needs finite low <= high, got {bounds!r}")
        out[name] = (low, high)
    return out


def _with_domains(sym, domains: Mapping[str, tuple[float, float]]):
    """``sym`` with each free symbol named in ``domains`` replaced by one that carries the
    range's sign: positive for ``low >= 0``, negative for ``high <= 0``, else real."""
    import sympy as sp

    replacements = {}
    for s in sym.free_symbols:
        bounds = domains.get(s.name)
        if bounds is None:
            continue
        low, high = bounds
        if low >= 0:
            replacements[s] = sp.Symbol(s.name, positive=True)
        elif high <= 0:
            replacements[s] = sp.Symbol(s.name, negative=True)
        else:
            replacements[s] = sp.Symbol(s.name, real=True)
    return sym.xreplace(replacements) if replacements else sym
