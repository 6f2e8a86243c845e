"""Constant optimisation (SR.jl ``src/ConstantOptimization.jl``), compiled with Numba.

SR.jl (PySR's defaults): ``Optim.BFGS(linesearch=BackTracking())`` for >= 2 constants and
``Optim.Newton(linesearch=BackTracking())`` for one, ``iterations = optimizer_iterations``,
``f_calls_limit = 10_000``, gradients by finite differences (no autodiff backend), started once
from the current constants and ``optimizer_nrestarts`` times from ``x0 .* (1 + 0.5 randn)``;
the best minimum is kept only if it beats the loss at ``x0``. This module reimplements those
algorithms in one Numba kernel over a batch of members:

* BFGS: inverse-Hessian update starting from the identity, search direction ``-H g``
  (reset to ``-g`` when not a descent direction), Armijo backtracking (c1 = 1e-4) from step 1
  with safeguarded quadratic interpolation in [0.1, 0.5] (LineSearches' ``BackTracking``
  defaults), stop on ``|g|_inf <= 1e-8`` or an unchanged objective (Optim's default tolerances);
* Newton (1 constant): step ``-g / |h|`` with a central-difference second derivative
  (PositiveFactorizations makes a negative curvature positive) and the same line search;
* gradients: central differences with step ``cbrt(eps) * max(1, |x|)`` (FiniteDiff's default).

Evaluation counting follows SR.jl: ``num_evals += f_calls`` of every run (objective values
only: Optim's ``f_calls`` does not count the finite-difference gradient evaluations), plus one
for the final loss when the result is accepted. The loss at ``x0`` (the baseline) is not
counted, as in SR.jl. ``raw_evals`` (every evaluation the kernel made, gradients included) is
returned as well, for honest speed accounting.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import numpy as np
from numba import njit

_ev = importlib.import_module("ttsr_bridge.expr.evaluate")  # the module (the package re-exports a function of that name)
from ..expr.evaluate import EvalData
from .population import Lineage, PopMember, loss_to_cost

__all__ = ["OptimizeResult", "optimize_constants_batch"]

# The compiled evaluator's internals (same package): one tree on one stack, and the MSE.
_eval_into = _ev._eval_into
_mse = _ev._mse
_ARITY = _ev._ARITY

_FD_STEP = 6.055454452393343e-06  # cbrt(eps(Float64))


@njit(cache=True)
def _objective(codes, vals, cidx, x, Xt, y, w, arity, stack):
    for k in range(cidx.shape[0]):
        vals[cidx[k]] = x[k]
    s = _eval_into(codes, vals, 0, codes.shape[0], Xt, stack, arity, True)
    if s != 0:
        return np.inf
    loss = _mse(stack[0], y, w)
    return loss if math.isfinite(loss) else np.inf


@njit(cache=True)
def _gradient(codes, vals, cidx, x, Xt, y, w, arity, stack, g):
    """Central differences; returns the number of evaluations made."""
    n = x.shape[0]
    xt = x.copy()
    for k in range(n):
        h = _FD_STEP * max(1.0, abs(x[k]))
        xt[k] = x[k] + h
        fp = _objective(codes, vals, cidx, xt, Xt, y, w, arity, stack)
        xt[k] = x[k] - h
        fm = _objective(codes, vals, cidx, xt, Xt, y, w, arity, stack)
        xt[k] = x[k]
        g[k] = (fp - fm) / (2.0 * h)
    return 2 * n


@njit(cache=True)
def _second_derivative(codes, vals, cidx, x, fx, Xt, y, w, arity, stack):
    h = _FD_STEP * max(1.0, abs(x[0])) * 10.0
    xt = x.copy()
    xt[0] = x[0] + h
    fp = _objective(codes, vals, cidx, xt, Xt, y, w, arity, stack)
    xt[0] = x[0] - h
    fm = _objective(codes, vals, cidx, xt, Xt, y, w, arity, stack)
    return (fp - 2.0 * fx + fm) / (h * h)


@njit(cache=True)
def _minimize(codes, vals, cidx, x0, Xt, y, w, arity, stack, iterations, f_calls_limit, counts):
    """BFGS (n >= 2) or Newton (n == 1) from ``x0``; returns (x_best, f_best).
    ``counts[0]`` += objective calls (Optim's f_calls), ``counts[1]`` += all evaluations."""
    n = x0.shape[0]
    x = x0.copy()
    fx = _objective(codes, vals, cidx, x, Xt, y, w, arity, stack)
    f_calls = 1
    raw = 1
    g = np.empty(n)
    if not math.isfinite(fx):
        counts[0] += f_calls
        counts[1] += raw
        return x, fx
    raw += _gradient(codes, vals, cidx, x, Xt, y, w, arity, stack, g)
    H = np.eye(n)
    for _it in range(iterations):
        gmax = 0.0
        for k in range(n):
            gmax = max(gmax, abs(g[k]))
        if not (gmax > 1e-8):
            break
        # search direction
        s = np.empty(n)
        if n == 1:
            hess = _second_derivative(codes, vals, cidx, x, fx, Xt, y, w, arity, stack)
            raw += 2
            hess = abs(hess)
            s[0] = -g[0] / hess if (hess > 0 and math.isfinite(hess)) else -g[0]
        else:
            for i in range(n):
                acc = 0.0
                for j in range(n):
                    acc -= H[i, j] * g[j]
                s[i] = acc
        slope = 0.0
        for k in range(n):
            slope += s[k] * g[k]
        if not (slope < 0):
            H = np.eye(n)
            for k in range(n):
                s[k] = -g[k]
            slope = 0.0
            for k in range(n):
                slope -= g[k] * g[k]
        # Armijo backtracking with safeguarded quadratic interpolation
        alpha = 1.0
        xn = x.copy()
        fn = np.inf
        ok = False
        for _ls in range(50):
            for k in range(n):
                xn[k] = x[k] + alpha * s[k]
            fn = _objective(codes, vals, cidx, xn, Xt, y, w, arity, stack)
            f_calls += 1
            raw += 1
            if math.isfinite(fn) and fn <= fx + 1e-4 * alpha * slope:
                ok = True
                break
            if f_calls >= f_calls_limit:
                break
            if math.isfinite(fn):
                denom = 2.0 * (fn - fx - slope * alpha)
                anew = -slope * alpha * alpha / denom if denom > 0 else 0.5 * alpha
                alpha = min(max(anew, 0.1 * alpha), 0.5 * alpha)
            else:
                alpha *= 0.5
        if not ok:
            break
        gn = np.empty(n)
        raw += _gradient(codes, vals, cidx, xn, Xt, y, w, arity, stack, gn)
        if n > 1:
            # BFGS inverse-Hessian update
            dx = xn - x
            dg = gn - g
            dxdg = 0.0
            for k in range(n):
                dxdg += dx[k] * dg[k]
            if dxdg > 0 and math.isfinite(dxdg):
                Hdg = H @ dg
                dgHdg = 0.0
                for k in range(n):
                    dgHdg += dg[k] * Hdg[k]
                c1 = (dxdg + dgHdg) / (dxdg * dxdg)
                for i in range(n):
                    for j in range(n):
                        H[i, j] += c1 * dx[i] * dx[j] - (Hdg[i] * dx[j] + dx[i] * Hdg[j]) / dxdg
        unchanged = fn == fx
        x = xn
        fx = fn
        g = gn
        if unchanged or f_calls >= f_calls_limit:
            break
    counts[0] += f_calls
    counts[1] += raw
    return x, fx


@njit(cache=True)
def _optimize_batch_kernel(codes, vals, offsets, cpos, coffsets, eps, Xt, y, w, arity,
                           iterations, f_calls_limit, nrestarts, out_vals, out_loss, out_improved, counts):
    """For each packed tree: optimise its constants (positions ``cpos[coffsets[k]:coffsets[k+1]]``
    relative to the tree) from x0 and ``nrestarts`` perturbed starts ``x0 * (1 + 0.5 eps)``."""
    m = offsets.shape[0] - 1
    for k in range(m):
        a, b = offsets[k], offsets[k + 1]
        tc = codes[a:b].copy()
        tv = vals[a:b].copy()
        out_vals[a:b] = tv
        cidx = cpos[coffsets[k]:coffsets[k + 1]]
        n = cidx.shape[0]
        out_improved[k] = False
        out_loss[k] = np.inf
        if n == 0:
            continue
        stack = np.empty((b - a + 1, Xt.shape[1]))
        x0 = np.empty(n)
        for j in range(n):
            x0[j] = tv[cidx[j]]
        baseline = _objective(tc, tv, cidx, x0, Xt, y, w, arity, stack)
        best_x, best_f = _minimize(tc, tv, cidx, x0, Xt, y, w, arity, stack, iterations, f_calls_limit, counts)
        for r in range(nrestarts):
            xt = np.empty(n)
            for j in range(n):
                xt[j] = x0[j] * (1.0 + 0.5 * eps[coffsets[k] * nrestarts + r * n + j])
            rx, rf = _minimize(tc, tv, cidx, xt, Xt, y, w, arity, stack, iterations, f_calls_limit, counts)
            if rf < best_f:
                best_x, best_f = rx, rf
        if best_f < baseline:
            final = _objective(tc, tv, cidx, best_x, Xt, y, w, arity, stack)
            counts[0] += 1
            counts[1] += 1
            for j in range(n):
                out_vals[a + cidx[j]] = best_x[j]
            out_loss[k] = final
            out_improved[k] = True


class OptimizeResult:
    """Counters of one batched optimisation call."""

    __slots__ = ("improved", "num_evals", "raw_evals")

    def __init__(self, num_evals: float, raw_evals: float, improved: int):
        self.num_evals = num_evals
        self.raw_evals = raw_evals
        self.improved = improved


def optimize_constants_batch(
    members: Sequence[PopMember],
    data: EvalData,
    *,
    iterations: int,
    nrestarts: int,
    f_calls_limit: int,
    gen: np.random.Generator,
    lineage: Lineage,
    baseline: float,
    use_baseline: bool,
    parsimony: float,
) -> tuple[list[PopMember], OptimizeResult]:
    """SR.jl's ``optimize_constants`` for every member (in one compiled call).

    Returns new members (same ref/parent; a new tree, loss, cost and birth when the optimum
    beat the current constants, else the member itself) and the evaluation counters."""
    from ..expr.evaluate import pack_exprs

    if not members:
        return [], OptimizeResult(0.0, 0.0, 0)
    trees = [m.tree for m in members]
    p = pack_exprs(trees)
    cpos_list: list[int] = []
    coff = [0]
    for t in trees:
        cpos_list.extend(i for i, c in enumerate(t.codes) if c == 0)
        coff.append(len(cpos_list))
    cpos = np.asarray(cpos_list, dtype=np.int64)
    coffsets = np.asarray(coff, dtype=np.int64)
    eps = gen.standard_normal(max(1, len(cpos_list) * nrestarts))
    out_vals = np.empty_like(p.vals)
    out_loss = np.empty(len(trees))
    out_improved = np.zeros(len(trees), dtype=np.bool_)
    counts = np.zeros(2, dtype=np.int64)
    _optimize_batch_kernel(p.codes, p.vals, p.offsets, cpos, coffsets, eps, data.Xt, data.y,
                           data._w_or_empty, _ARITY, iterations, f_calls_limit, nrestarts,
                           out_vals, out_loss, out_improved, counts)
    out: list[PopMember] = []
    nimp = 0
    from ..expr.tree import Expr

    for k, m in enumerate(members):
        if not out_improved[k]:
            out.append(m)
            continue
        nimp += 1
        a, b = int(p.offsets[k]), int(p.offsets[k + 1])
        tree = Expr.__new__(Expr)
        tree.codes = m.tree.codes
        tree.vals = out_vals[a:b].tolist()
        loss = float(out_loss[k])
        cost = loss_to_cost(loss, baseline, use_baseline, m.complexity, parsimony)
        out.append(PopMember(tree, cost, loss, lineage.birth(), m.complexity, m.ref, m.parent))
    return out, OptimizeResult(float(counts[0]), float(counts[1]), nimp)
