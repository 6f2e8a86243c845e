"""Evaluating expressions on data: SR.jl's ``eval_tree_array`` + ``eval_loss``.

A Numba-compiled stack interpreter runs many prefix code lists in one call. Code lists of a
batch are concatenated (``codes``/``vals`` arrays with ``offsets``: expression ``k`` is
``codes[offsets[k]:offsets[k+1]]``), and each is evaluated right to left over a preallocated
``(depth, n_samples)`` stack, one vectorised loop per node.

Semantics follow DynamicExpressions' ``eval_tree_array``: as soon as a constant or an
operator result contains a non-finite value the evaluation stops and the result is flagged
incomplete; SR.jl then gives the candidate the loss ``inf``. :func:`evaluate` is the
exception: it computes the full prediction vector and lets NaN/inf through.

Every built-in operator of :mod:`.operators` is implemented in Numba with the same safe
semantics as its NumPy function. An expression using a user-registered operator is evaluated
by a NumPy fallback with the same stopping rule.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from .operators import OPERATORS
from .tree import Expr

__all__ = [
    "COMPILED_ARITY",
    "COMPILED_OPERATOR_IDS",
    "STATUS_MALFORMED",
    "STATUS_NONFINITE",
    "STATUS_OK",
    "EvalData",
    "PackedExprs",
    "eval_batch",
    "eval_batch_codes",
    "eval_tree_into",
    "evaluate",
    "loss_batch",
    "loss_batch_codes",
    "loss_one",
    "mse_kernel",
    "pack_exprs",
    "stack_depth",
]

# Status codes returned per expression by the compiled kernels.
STATUS_OK = 0
STATUS_NONFINITE = 1  # some constant or intermediate result was NaN/inf (SR.jl: incomplete)
STATUS_MALFORMED = 2  # the code list is not exactly one prefix tree of compiled operators

# Operator ids the compiled kernels implement (must cover every built-in of operators.py;
# a test checks this). Ids outside this set route the expression to the NumPy fallback.
COMPILED_OPERATOR_IDS: frozenset[int] = frozenset([1, 2, 3, 4, 5, 6, 7, 8] + list(range(20, 45)))
_TABLE_SIZE = 64
_ARITY = np.zeros(_TABLE_SIZE, dtype=np.int64)  # 0 = not compiled
for _id in COMPILED_OPERATOR_IDS:
    _ARITY[_id] = OPERATORS[_id].arity


# ================================================================================================
# Data
# ================================================================================================
class EvalData:
    """Validated training data: ``X`` ``(n_samples, n_features)``, ``y`` ``(n_samples,)``, optional
    positive ``weights``. Stores ``Xt``, a C-contiguous float64 ``(n_features, n_samples)`` copy
    (rows are features, so one feature is a contiguous vector as in SR.jl's ``X``)."""

    __slots__ = ("Xt", "_w_or_empty", "n_features", "n_samples", "weights", "y")

    def __init__(self, X, y, weights=None):
        X = _as_float_array(X, "X")
        y = _as_float_array(y, "y")
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X must be non-empty, got shape {X.shape}")
        if y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
        _check_finite(X, "X")
        _check_finite(y, "y")
        self.Xt: np.ndarray = np.ascontiguousarray(X.T, dtype=np.float64)  # (n_features, n)
        self.y: np.ndarray = np.ascontiguousarray(y, dtype=np.float64)  # (n,)
        self.n_samples, self.n_features = X.shape
        if weights is None:
            self.weights: np.ndarray | None = None
            self._w_or_empty = np.empty(0, dtype=np.float64)
        else:
            w = _as_float_array(weights, "weights")
            if w.shape != y.shape:
                raise ValueError(f"weights must have shape {y.shape}, got {w.shape}")
            _check_finite(w, "weights")
            if np.any(w < 0) or not np.sum(w) > 0:
                raise ValueError("weights must be >= 0 with a positive sum")
            self.weights = np.ascontiguousarray(w, dtype=np.float64)
            self._w_or_empty = self.weights

    @property
    def weights_or_empty(self) -> np.ndarray:
        """The weights, or an empty array when unweighted (what the kernels take)."""
        return self._w_or_empty

    @property
    def X(self) -> np.ndarray:
        """``(n_samples, n_features)`` view of the stored data."""
        return self.Xt.T


def _as_float_array(a, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(f"{what} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_finite(a: np.ndarray, what: str) -> None:
    if a.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} contains NaN or inf")


# ================================================================================================
# Packing
# ================================================================================================
@dataclass(frozen=True)
class PackedExprs:
    """Concatenated prefix code lists: expression ``k`` is ``codes[offsets[k]:offsets[k+1]]``,
    of length ``lengths[k]``."""

    codes: np.ndarray  # (total,) int64
    vals: np.ndarray  # (total,) float64
    offsets: np.ndarray  # (m + 1,) int64
    lengths: np.ndarray  # (m,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1


def pack_exprs(exprs: Sequence[Expr]) -> PackedExprs:
    """Concatenate the code lists of ``exprs`` into one :class:`PackedExprs`."""
    lengths = np.fromiter((len(e.codes) for e in exprs), dtype=np.int64, count=len(exprs))
    offsets = np.zeros(len(exprs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    codes = np.fromiter(
        itertools.chain.from_iterable(e.codes for e in exprs), dtype=np.int64, count=total
    )
    vals = np.fromiter(
        itertools.chain.from_iterable(e.vals for e in exprs), dtype=np.float64, count=total
    )
    return PackedExprs(codes, vals, offsets, lengths)


def _needs_fallback(codes: Sequence[int]) -> bool:
    """True when a code list uses an operator the compiled kernels do not implement."""
    return any(c < 0 and -c not in COMPILED_OPERATOR_IDS for c in codes)


# ================================================================================================
# Compiled operators (same safe semantics as the NumPy functions in operators.py)
# ================================================================================================
@njit(cache=True, error_model="numpy")
def _binary(opid, a, b):
    """``op(a, b)`` for one pair of floats (a = left child)."""
    if opid == 1:
        return a + b
    if opid == 2:
        return a - b
    if opid == 3:
        return a * b
    if opid == 4:
        return a / b
    if opid == 5:
        # safe_pow: non-integer power of a negative base, and 0 to a negative power, are NaN.
        if (math.floor(b) != b and a < 0.0) or (a == 0.0 and b < 0.0):
            return np.nan
        return a**b
    if opid == 6:
        if math.isnan(a) or math.isnan(b):
            return np.nan
        return max(a, b)
    if opid == 7:
        if math.isnan(a) or math.isnan(b):
            return np.nan
        return min(a, b)
    if opid == 8:
        # np.mod: floored modulo with the sign of the divisor; x mod 0 is NaN.
        if b == 0.0:
            return np.nan
        r = np.fmod(a, b)
        if r != 0.0:
            if (r < 0.0) != (b < 0.0):
                r += b
        else:
            r = math.copysign(0.0, b)
        return r
    return np.nan


@njit(cache=True, error_model="numpy")
def _unary(opid, x):
    """``op(x)`` for one float."""
    if opid == 20:
        return -x
    if opid == 21:
        return x * x
    if opid == 22:
        return x * x * x
    if opid == 23:
        return math.exp(x)
    if opid == 24:
        return math.log(x) if x > 0.0 else np.nan
    if opid == 25:
        return math.log2(x) if x > 0.0 else np.nan
    if opid == 26:
        return math.log10(x) if x > 0.0 else np.nan
    if opid == 27:
        return math.log1p(x) if x > -1.0 else np.nan
    if opid == 28:
        return math.sqrt(x) if x >= 0.0 else np.nan
    if opid == 29:
        return math.sin(x)
    if opid == 30:
        return math.cos(x)
    if opid == 31:
        return math.tan(x)
    if opid == 32:
        return math.sinh(x)
    if opid == 33:
        return math.cosh(x)
    if opid == 34:
        return math.tanh(x)
    if opid == 35:
        return math.asin(x) if abs(x) <= 1.0 else np.nan
    if opid == 36:
        return math.acos(x) if abs(x) <= 1.0 else np.nan
    if opid == 37:
        return math.atan(x)
    if opid == 38:
        return math.asinh(x)
    if opid == 39:
        return math.acosh(x) if x >= 1.0 else np.nan
    if opid == 40:
        return math.atanh(x) if abs(x) < 1.0 else np.nan
    if opid == 41:
        return abs(x)
    if opid == 42:
        return 1.0 / x
    if opid == 43:
        if x > 0.0:
            return 1.0
        if x < 0.0:
            return -1.0
        return x  # 0.0, -0.0 or NaN, as np.sign
    if opid == 44:
        if math.isnan(x):
            return np.nan
        return max(0.0, x)
    return np.nan


@njit(cache=True, error_model="numpy")
def _apply_binary(opid, stack, left, right, n):
    """stack[right] = op(stack[left], stack[right]) row-wise; one loop per operator so that the
    common arithmetic operators vectorise."""
    a = stack[left]
    b = stack[right]
    if opid == 1:
        for j in range(n):
            b[j] = a[j] + b[j]
    elif opid == 2:
        for j in range(n):
            b[j] = a[j] - b[j]
    elif opid == 3:
        for j in range(n):
            b[j] = a[j] * b[j]
    elif opid == 4:
        for j in range(n):
            b[j] = a[j] / b[j]
    else:
        for j in range(n):
            b[j] = _binary(opid, a[j], b[j])


@njit(cache=True, error_model="numpy")
def _apply_unary(opid, row, n):
    """row = op(row) in place."""
    if opid == 20:
        for j in range(n):
            row[j] = -row[j]
    elif opid == 21:
        for j in range(n):
            row[j] = row[j] * row[j]
    elif opid == 29:
        for j in range(n):
            row[j] = math.sin(row[j])
    elif opid == 30:
        for j in range(n):
            row[j] = math.cos(row[j])
    elif opid == 23:
        for j in range(n):
            row[j] = math.exp(row[j])
    else:
        for j in range(n):
            row[j] = _unary(opid, row[j])


@njit(cache=True, fastmath={"reassoc"})
def _row_finite(row, n):
    # x - x is 0 for finite x and NaN for NaN/inf, so one reduction tests the whole row.
    acc = 0.0
    for j in range(n):
        acc += row[j] - row[j]
    return acc == 0.0


# ================================================================================================
# Compiled interpreter
# ================================================================================================
@njit(cache=True)
def _stack_depth(codes, offsets, arity):
    """Largest stack height any expression needs when evaluated right to left (>= 1)."""
    best = 1
    for k in range(offsets.shape[0] - 1):
        h = 0
        for i in range(offsets[k + 1] - 1, offsets[k] - 1, -1):
            c = codes[i]
            if c >= 0:
                h += 1
                best = max(best, h)
            elif -c < arity.shape[0]:
                h -= arity[-c] - 1
    return best


@njit(cache=True, error_model="numpy")
def _eval_into(codes, vals, start, end, Xt, stack, arity, stop_on_nonfinite):
    """Evaluate ``codes[start:end]``; the result is left in ``stack[0]``.

    Returns a status: STATUS_OK, STATUS_NONFINITE (only when ``stop_on_nonfinite``) or
    STATUS_MALFORMED (not exactly one tree, unknown operator, feature out of range)."""
    n = Xt.shape[1]
    nfeat = Xt.shape[0]
    sp = 0  # number of occupied stack rows
    for i in range(end - 1, start - 1, -1):
        c = codes[i]
        if c == 0:
            if sp >= stack.shape[0]:
                return 2
            v = vals[i]
            if stop_on_nonfinite and not math.isfinite(v):
                return 1
            row = stack[sp]
            for j in range(n):
                row[j] = v
            sp += 1
        elif c > 0:
            if c > nfeat or sp >= stack.shape[0]:
                return 2
            stack[sp, :] = Xt[c - 1]
            sp += 1
        else:
            opid = -c
            if opid >= arity.shape[0] or arity[opid] == 0:
                return 2
            if arity[opid] == 2:
                if sp < 2:
                    return 2
                # The left child was pushed last (right-to-left), so it is on top.
                _apply_binary(opid, stack, sp - 1, sp - 2, n)
                sp -= 1
            else:
                if sp < 1:
                    return 2
                _apply_unary(opid, stack[sp - 1], n)
            if stop_on_nonfinite and not _row_finite(stack[sp - 1], n):
                return 1
    if sp != 1:
        return 2
    return 0


@njit(cache=True)
def _mse(pred, y, w):
    n = y.shape[0]
    acc = 0.0
    if w.shape[0] == 0:
        for j in range(n):
            d = pred[j] - y[j]
            acc += d * d
        return acc / n
    wsum = 0.0
    for j in range(n):
        d = pred[j] - y[j]
        acc += w[j] * d * d
        wsum += w[j]
    return acc / wsum


@njit(cache=True)
def _loss_kernel(codes, vals, offsets, Xt, y, w, arity, status):
    """MSE (weighted when ``w`` is non-empty) of each packed expression; inf when invalid."""
    m = offsets.shape[0] - 1
    depth = _stack_depth(codes, offsets, arity)
    stack = np.empty((depth, Xt.shape[1]), dtype=np.float64)
    out = np.empty(m, dtype=np.float64)
    for k in range(m):
        s = _eval_into(codes, vals, offsets[k], offsets[k + 1], Xt, stack, arity, True)
        status[k] = s
        if s != 0:
            out[k] = np.inf
        else:
            loss = _mse(stack[0], y, w)
            out[k] = loss if math.isfinite(loss) else np.inf
    return out


@njit(cache=True)
def _eval_kernel(codes, vals, offsets, Xt, arity, stop_on_nonfinite, preds, status):
    """Predictions of each packed expression into ``preds`` (m, n); rows of invalid ones are
    left NaN when evaluation stopped early."""
    m = offsets.shape[0] - 1
    depth = _stack_depth(codes, offsets, arity)
    stack = np.empty((depth, Xt.shape[1]), dtype=np.float64)
    for k in range(m):
        s = _eval_into(codes, vals, offsets[k], offsets[k + 1], Xt, stack, arity, stop_on_nonfinite)
        status[k] = s
        if s == 0:
            preds[k, :] = stack[0]
        else:
            preds[k, :] = np.nan


# Stable names for code that builds its own compiled loops on the interpreter (e.g. the
# constant optimiser): ``eval_tree_into(codes, vals, start, end, Xt, stack, COMPILED_ARITY,
# stop_on_nonfinite) -> status`` leaves the result in ``stack[0]``; ``mse_kernel(pred, y, w)``.
eval_tree_into = _eval_into
mse_kernel = _mse
stack_depth = _stack_depth
COMPILED_ARITY = _ARITY


# ================================================================================================
# NumPy fallback (user-registered operators)
# ================================================================================================
def _numpy_eval(expr: Expr, Xt: np.ndarray, stop_on_nonfinite: bool) -> tuple[np.ndarray, int]:
    """Evaluate ``expr`` with the operators' NumPy functions; same stopping rule as the kernel."""
    n = Xt.shape[1]
    stack: list[np.ndarray] = []
    codes, vals = expr.codes, expr.vals
    for i in range(len(codes) - 1, -1, -1):
        c = codes[i]
        if c == 0:
            if stop_on_nonfinite and not math.isfinite(vals[i]):
                return np.full(n, np.nan), STATUS_NONFINITE
            stack.append(np.full(n, vals[i]))
        elif c > 0:
            if c > Xt.shape[0]:
                return np.full(n, np.nan), STATUS_MALFORMED
            stack.append(Xt[c - 1].copy())
        else:
            operator = OPERATORS.get(-c)
            if operator is None or len(stack) < operator.arity:
                return np.full(n, np.nan), STATUS_MALFORMED
            args = [stack.pop() for _ in range(operator.arity)]  # left child first
            res = np.asarray(operator.numpy(*args), dtype=np.float64)
            res = np.broadcast_to(res, (n,)).copy()
            if stop_on_nonfinite and not np.all(np.isfinite(res)):
                return np.full(n, np.nan), STATUS_NONFINITE
            stack.append(res)
    if len(stack) != 1:
        return np.full(n, np.nan), STATUS_MALFORMED
    return stack[0], STATUS_OK


# ================================================================================================
# Public API
# ================================================================================================
def loss_batch_codes(
    codes: np.ndarray,
    vals: np.ndarray,
    offsets: np.ndarray,
    data: EvalData,
    status: np.ndarray | None = None,
) -> np.ndarray:
    """Low-level loss of pre-packed expressions (compiled operators only).

    ``codes`` int64, ``vals`` float64, ``offsets`` int64 ``(m + 1,)``. Returns ``(m,)`` MSE
    (weighted when ``data`` has weights), ``inf`` for invalid ones. Malformed code lists (or
    ones with non-compiled operators) get ``inf`` and status ``STATUS_MALFORMED`` in ``status``
    (an optional int64 ``(m,)`` output array); no Python-level checks, for the search's hot loop.
    """
    m = offsets.shape[0] - 1
    if status is None:
        status = np.empty(m, dtype=np.int64)
    return _loss_kernel(codes, vals, offsets, data.Xt, data.y, data._w_or_empty, _ARITY, status)


def eval_batch_codes(
    codes: np.ndarray,
    vals: np.ndarray,
    offsets: np.ndarray,
    Xt: np.ndarray,
    *,
    stop_on_nonfinite: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Low-level predictions of pre-packed expressions (compiled operators only) on a
    C-contiguous float64 ``Xt`` ``(n_features, n_samples)``. Returns ``(preds (m, n), status (m,))``."""
    m = offsets.shape[0] - 1
    preds = np.empty((m, Xt.shape[1]), dtype=np.float64)
    status = np.empty(m, dtype=np.int64)
    _eval_kernel(codes, vals, offsets, Xt, _ARITY, stop_on_nonfinite, preds, status)
    return preds, status


def _fallback_mask(p: PackedExprs) -> np.ndarray | None:
    """``(m,)`` bool mask of packed expressions using an operator the kernels do not compile,
    or None when there is none (the common case, decided by one vectorised test)."""
    ops = -p.codes[p.codes < 0]
    in_table = ops < _TABLE_SIZE
    if np.all(in_table) and np.all(_ARITY[ops] > 0):
        return None
    bad_code = np.zeros(len(p.codes), dtype=np.int64)
    neg = p.codes < 0
    ids = -p.codes[neg]
    compiled = np.zeros(len(ids), dtype=bool)
    small = ids < _TABLE_SIZE
    compiled[small] = _ARITY[ids[small]] > 0
    bad_code[np.flatnonzero(neg)[~compiled]] = 1
    starts = np.minimum(p.offsets[:-1], max(len(p.codes) - 1, 0))
    counts = np.add.reduceat(bad_code, starts) if len(p.codes) else np.zeros(len(p))
    # reduceat returns the element at an empty segment's start; empty expressions are
    # malformed anyway and are reported by the kernel.
    lengths = np.diff(p.offsets)
    return (counts > 0) & (lengths > 0)


def _subset(exprs: Sequence[Expr], index: np.ndarray) -> PackedExprs:
    return pack_exprs([exprs[k] for k in index])


def _raise_malformed(exprs: Sequence[Expr], status: np.ndarray, index: Sequence[int]) -> None:
    bad = np.flatnonzero(status == STATUS_MALFORMED)
    if len(bad):
        k = int(index[int(bad[0])])
        raise ValueError(
            f"expression {k} is malformed or uses a feature outside the data: "
            f"codes={exprs[k].codes!r}"
        )


def eval_batch(exprs: Sequence[Expr], data: EvalData) -> tuple[np.ndarray, np.ndarray]:
    """Predictions ``(m, n_samples)`` and validity ``(m,)`` of each expression on ``data``.

    An expression is invalid (SR.jl: incomplete) when a constant or an intermediate result is
    non-finite; its row is NaN. Raises ``ValueError`` for malformed trees."""
    m = len(exprs)
    p = pack_exprs(exprs)
    mask = _fallback_mask(p)
    if mask is None:
        preds, status = eval_batch_codes(p.codes, p.vals, p.offsets, data.Xt)
        _raise_malformed(exprs, status, np.arange(m))
        return preds, status == STATUS_OK
    preds = np.full((m, data.n_samples), np.nan)
    valid = np.zeros(m, dtype=bool)
    compiled = np.flatnonzero(~mask)
    if len(compiled):
        sp = _subset(exprs, compiled)
        sub, status = eval_batch_codes(sp.codes, sp.vals, sp.offsets, data.Xt)
        _raise_malformed(exprs, status, compiled)
        preds[compiled] = sub
        valid[compiled] = status == STATUS_OK
    for k in np.flatnonzero(mask):
        row, s = _numpy_eval(exprs[k], data.Xt, True)
        _raise_malformed(exprs, np.array([s]), [k])
        preds[k] = row
        valid[k] = s == STATUS_OK
    return preds, valid


def loss_batch(exprs: Sequence[Expr], data: EvalData) -> np.ndarray:
    """MSE (weighted MSE when ``data`` has weights) of each expression, ``inf`` when invalid.
    Raises ``ValueError`` for malformed trees."""
    m = len(exprs)
    p = pack_exprs(exprs)
    mask = _fallback_mask(p)
    if mask is None:
        status = np.empty(m, dtype=np.int64)
        out = loss_batch_codes(p.codes, p.vals, p.offsets, data, status)
        _raise_malformed(exprs, status, np.arange(m))
        return out
    out = np.empty(m, dtype=np.float64)
    compiled = np.flatnonzero(~mask)
    if len(compiled):
        sp = _subset(exprs, compiled)
        status = np.empty(len(compiled), dtype=np.int64)
        out[compiled] = loss_batch_codes(sp.codes, sp.vals, sp.offsets, data, status)
        _raise_malformed(exprs, status, compiled)
    for k in np.flatnonzero(mask):
        out[k] = _fallback_loss(exprs, int(k), data)
    return out


def _fallback_loss(exprs: Sequence[Expr], k: int, data: EvalData) -> float:
    row, s = _numpy_eval(exprs[k], data.Xt, True)
    _raise_malformed(exprs, np.array([s]), [k])
    if s != STATUS_OK:
        return math.inf
    loss = float(_mse(row, data.y, data._w_or_empty))
    return loss if math.isfinite(loss) else math.inf


def loss_one(expr: Expr, data: EvalData) -> float:
    """Loss of a single expression (the fast single-expression path of :func:`loss_batch`)."""
    if _needs_fallback(expr.codes):
        return _fallback_loss([expr], 0, data)
    codes = np.asarray(expr.codes, dtype=np.int64)
    vals = np.asarray(expr.vals, dtype=np.float64)
    offsets = np.array([0, len(codes)], dtype=np.int64)
    status = np.empty(1, dtype=np.int64)
    loss = float(loss_batch_codes(codes, vals, offsets, data, status)[0])
    _raise_malformed([expr], status, [0])
    return loss


def evaluate(expr: Expr, X) -> np.ndarray:
    """Prediction vector ``(n_samples,)`` of ``expr`` on ``X`` ``(n_samples, n_features)``.

    Unlike the loss functions this never stops early: NaN/inf are returned as computed (X may
    contain them too). Raises ``ValueError`` for malformed trees or too few columns."""
    X = _as_float_array(X, "X")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    Xt = np.ascontiguousarray(X.T, dtype=np.float64)
    if _needs_fallback(expr.codes):
        row, s = _numpy_eval(expr, Xt, False)
    else:
        codes = np.asarray(expr.codes, dtype=np.int64)
        vals = np.asarray(expr.vals, dtype=np.float64)
        offsets = np.array([0, len(codes)], dtype=np.int64)
        preds, status = eval_batch_codes(codes, vals, offsets, Xt, stop_on_nonfinite=False)
        row, s = preds[0], int(status[0])
    if s == STATUS_MALFORMED:
        raise ValueError(
            f"malformed expression or feature outside X's {Xt.shape[0]} columns: codes={expr.codes!r}"
        )
    return row
