"""Benchmark adapter: one PySR search (``pysr``) or PySR with the neural move (``pysr-neural``).

The bench engineer's runner calls :func:`run_pysr`; the result's Pareto front is given both as
PySR's equation strings and as parsed :class:`~ttsr_bridge.expr.tree.Expr` (PySR prints features
``x0..x{d-1}``, mapped back to columns of X).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..expr.operators import OperatorSet
from ..expr.tree import Expr
from .spec import PySRBudget, pysr_operator_names

__all__ = ["ParetoPoint", "PySRRunResult", "pysr_bench_kwargs", "run_pysr"]


@dataclass(frozen=True)
class ParetoPoint:
    complexity: int
    loss: float
    equation: str  # as PySR prints it
    expr: Expr | None  # None when the equation uses something ttsr_bridge cannot parse


@dataclass(frozen=True)
class PySRRunResult:
    engine: str  # "pysr" or "pysr-neural"
    pareto: tuple[ParetoPoint, ...]
    best: ParetoPoint | None  # PySR's model_selection="best" choice
    seconds: float
    neural_stats: dict[str, int] = field(default_factory=dict)  # TTSRBridge counters (pysr-neural)


def pysr_bench_kwargs(seed: int, budget: PySRBudget | int, operators: OperatorSet | None) -> dict[str, Any]:
    """PySR parameters of a benchmark run (no pysr import)."""
    binary, unary = pysr_operator_names(operators)
    return {
        **PySRBudget.coerce(budget).pysr_kwargs(),
        "binary_operators": binary,
        "unary_operators": unary,
        "random_state": int(seed),
        "precision": 64,
        "progress": False,
        "verbosity": 0,
        "temp_equation_file": True,
        "delete_tempfiles": True,
    }


def _pareto(model: Any, nfeatures: int) -> tuple[tuple[ParetoPoint, ...], ParetoPoint | None]:
    from ..expr.parser import ParseError, parse_tree

    names = [f"x{i}" for i in range(nfeatures)]
    eqs = model.equations_
    points = []
    for _, row in eqs.iterrows():
        try:
            expr = parse_tree(str(row["equation"]), names)
        except (ParseError, ValueError, KeyError):
            expr = None
        points.append(ParetoPoint(int(row["complexity"]), float(row["loss"]), str(row["equation"]), expr))
    best = None
    if points:
        chosen = model.get_best()  # PySR's model_selection ("best" by default)
        best = next((p for p in points if p.complexity == int(chosen["complexity"])), None)
    return tuple(points), best


def run_pysr(
    X: np.ndarray,
    y: np.ndarray,
    *,
    neural_proposer: str | None = None,
    budget: PySRBudget | int,
    seed: int,
    operators: OperatorSet | None,
    neural_weight: float = 1.0,
) -> PySRRunResult:
    """Fit PySR (``neural_proposer=None``) or ttsr_bridge's PySRRegressor with the proposer."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    kwargs = pysr_bench_kwargs(seed, budget, operators)
    t0 = time.perf_counter()
    stats: dict[str, int] = {}
    if neural_proposer is None:
        import pysr

        model = pysr.PySRRegressor(**kwargs)
        model.fit(X, y)
    else:
        from .regressor import PySRRegressor, bridge_stats

        model = PySRRegressor(neural_proposer=neural_proposer, neural_weight=neural_weight, **kwargs)
        model.fit(X, y)
        stats = bridge_stats()
    seconds = time.perf_counter() - t0
    pareto, best = _pareto(model, X.shape[1])
    return PySRRunResult("pysr" if neural_proposer is None else "pysr-neural", pareto, best, seconds, stats)
