"""PySR trace collection: one real PySR search with SR.jl's native tracing (``use_tracing``).

``ttsr traces collect --engine pysr`` calls :func:`collect_unit_pysr` once per (problem, seed);
the file it writes is SR.jl's JSONL trace format (design.md §3), read by
``ttsr_bridge.traces.reader.read_trace`` like the Python engine's traces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .spec import PySRBudget, pysr_operator_names

__all__ = ["PySRTraceUnit", "collect_unit_pysr", "pysr_trace_kwargs"]


@dataclass(frozen=True)
class PySRTraceUnit:
    """What one collection unit produced."""

    problem: str
    seed: int
    path: Path
    seconds: float
    n_samples: int


def pysr_trace_kwargs(problem: Any, seed: int, out_path: Path, budget: PySRBudget | int) -> dict[str, Any]:
    """The PySR parameters of a traced, reproducible search of ``problem`` (no pysr import)."""
    binary, unary = pysr_operator_names(getattr(problem, "operators", None))
    return {
        **PySRBudget.coerce(budget).pysr_kwargs(),
        "binary_operators": binary,
        "unary_operators": unary,
        "use_tracing": True,
        "tracing_file": str(out_path),
        "random_state": int(seed),
        # SR.jl is reproducible only in serial mode (PySR refuses deterministic otherwise).
        "deterministic": True,
        "parallelism": "serial",
        "precision": 64,
        "progress": False,
        "verbosity": 0,
        "temp_equation_file": True,
        "delete_tempfiles": True,
    }


def collect_unit_pysr(problem: Any, seed: int, out_path: str | Path, budget: PySRBudget | int) -> PySRTraceUnit:
    """Run stock PySR on ``problem`` (a ``ttsr_bridge.bench.problems.Problem``: ``name``,
    ``operators``, ``sample(rng)``) with tracing to ``out_path``; needs pysr and Julia."""
    import pysr

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    X, y = problem.sample(np.random.default_rng(seed))
    t0 = time.perf_counter()
    model = pysr.PySRRegressor(**pysr_trace_kwargs(problem, seed, out, budget))
    model.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if not out.is_file():
        raise RuntimeError(f"PySR finished but wrote no trace at {out}")
    return PySRTraceUnit(str(getattr(problem, "name", "problem")), int(seed), out, time.perf_counter() - t0, len(y))
