"""Engine speed: evaluations per second of the ``pysr`` preset vs pyoperon, back to back.

Both engines get the same 100-point data set (y = x1² + x1·sin(x2) + 0.5·x3 on U[-3, 3]³),
operators + - * /, and the same evaluation budget; pyoperon runs without local search
(``optimizer_iterations=0``, ``local_search_probability=0``) on 2 threads. Our count is SR.jl's
``num_evals`` (one per evaluated child; the constant optimiser's objective calls counted as
Optim's ``f_calls``); pyoperon's is its evaluator's call count.

Usage: ``python -m ttsr_bridge.bench.engine_speed [--json] [--evals N] [--seed S] [--repeat R]``.
``--json`` prints one JSON line ``{"engine_evals_per_s", "operon_evals_per_s", "ratio", ...}``.
With ``--repeat R`` the two engines run back to back ``R`` times (alternating, so that a
change in the machine's load hits both) and the figures are the medians (``ratio`` is the
ratio of the medians); the single runs are listed in ``*_runs``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["SpeedResult", "main", "make_data", "measure_engine", "measure_operon"]


@dataclass(frozen=True)
class SpeedResult:
    evals: float
    seconds: float

    @property
    def evals_per_s(self) -> float:
        return self.evals / self.seconds if self.seconds > 0 else math.inf


def make_data(seed: int = 0, n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, size=(n, 3))
    y = X[:, 0] ** 2 + X[:, 0] * np.sin(X[:, 1]) + 0.5 * X[:, 2]
    return X, y


def measure_engine(X, y, evals: int, seed: int, *, trace=None) -> SpeedResult:
    """The ``pysr`` preset (all defaults but the budget) until ``evals`` evaluations."""
    from ..search import SearchConfig, equation_search

    # compile the kernels first so that JIT time is not measured
    warm = SearchConfig.preset("pysr", niterations=1, populations=2, ncycles_per_iteration=5, random_state=seed)
    equation_search(X, y, warm)
    cfg = SearchConfig.preset("pysr", niterations=10_000, max_evals=evals, random_state=seed)
    res = equation_search(X, y, cfg, trace=trace)
    return SpeedResult(res.num_evals, res.seconds)


def measure_operon(X, y, evals: int, seed: int, threads: int = 2) -> SpeedResult:
    """pyoperon without local search, same operators and evaluation budget."""
    from pyoperon.sklearn import SymbolicRegressor

    reg = SymbolicRegressor(
        allowed_symbols="add,sub,mul,div,constant,variable",
        optimizer_iterations=0,
        local_search_probability=0.0,
        lamarckian_probability=0.0,
        max_evaluations=evals,
        generations=100_000,
        population_size=1000,
        max_length=30,
        n_threads=threads,
        random_state=seed,
    )
    t0 = time.perf_counter()
    reg.fit(X, y)
    dt = time.perf_counter() - t0
    count = float(reg.stats_.get("evaluation_count", evals))
    return SpeedResult(count, dt)


def _median(xs: list[float]) -> float:
    return float(np.median(np.asarray(xs, dtype=float))) if xs else math.nan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--evals", type=int, default=300_000, help="evaluation budget per engine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="pyoperon threads")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine (medians are reported)")
    ap.add_argument("--trace", default=None, help="also write a trace (to measure its cost)")
    args = ap.parse_args(argv)
    if args.evals < 1000:
        ap.error("--evals must be >= 1000")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    X, y = make_data(args.seed)
    ours: list[SpeedResult] = []
    theirs: list[SpeedResult] = []
    for _ in range(args.repeat):
        ours.append(measure_engine(X, y, args.evals, args.seed, trace=args.trace))
        try:
            theirs.append(measure_operon(X, y, args.evals, args.seed, args.threads))
        except ImportError:
            pass
    eng = _median([r.evals_per_s for r in ours])
    op = _median([r.evals_per_s for r in theirs]) if theirs else None
    out = {
        "engine_evals_per_s": round(eng, 1),
        "operon_evals_per_s": round(op, 1) if op is not None else None,
        "ratio": round(eng / op, 4) if op else None,
        "engine_evals": ours[-1].evals,
        "engine_seconds": round(_median([r.seconds for r in ours]), 3),
        "operon_evals": theirs[-1].evals if theirs else None,
        "operon_seconds": round(_median([r.seconds for r in theirs]), 3) if theirs else None,
        "n_samples": int(X.shape[0]),
        "threads_operon": args.threads,
        "traced": args.trace is not None,
        "repeat": args.repeat,
        "engine_evals_per_s_runs": [round(r.evals_per_s, 1) for r in ours],
        "operon_evals_per_s_runs": [round(r.evals_per_s, 1) for r in theirs] if theirs else None,
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
