"""Exact-recovery check of the ``pysr`` preset (the issue's done criterion).

For every problem of the chosen suites, sample the training data as ``ttsr fit --problem``
does (``problem.sample(problem.data_rng(seed))``, the problem's operators), run
:func:`~ttsr_bridge.search.equation_search` with the ``pysr`` preset and a wall-clock limit,
and stop as soon as a hall-of-fame member is SymPy-equivalent to the truth after rounding
constants to 1e-6 (:func:`ttsr_bridge.expr.sympy_bridge.equivalent`), checked after every
iteration by the engine's ``callback``. Only members whose loss is within ``1e-8 · var(y)``
are handed to SymPy (a member whose constants match the truth to 1e-6 has a far lower loss),
and each tree is checked once.

Reported per problem: ``recovered`` (some hall-of-fame member is the truth), ``best_recovered``
(the model-selection ``best`` equation, the one ``ttsr fit`` prints, is the truth at the end),
``seconds`` (search wall-clock, checks included), ``evaluations`` (SR.jl's ``num_evals``),
``iterations`` and ``stop_reason``.

Usage::

    python -m ttsr_bridge.bench.recovery_check --suite harder --suite nguyen --limit-nguyen 8 \\
        --time-limit 60 --seed 0 --json

``--seeds K`` runs every problem with seeds ``S .. S+K-1`` (``S`` from ``--seed``: each seed
draws its own data and search) and reports, per problem, how many recovered.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["RecoveryResult", "RecoveryWatcher", "check_problem", "main", "selected_problems"]

# A member whose constants equal the truth's within 1e-6 (relative) has a relative MSE far below
# this; anything above cannot pass the symbolic test, so SymPy is not asked.
REL_LOSS_THRESHOLD = 1e-8


@dataclass(frozen=True)
class RecoveryResult:
    """The outcome of one problem and seed."""

    problem: str
    seed: int
    formula: str
    recovered: bool
    best_recovered: bool
    seconds: float
    evaluations: float
    iterations: int
    stop_reason: str
    equation: str  # the recovering member (SymPy syntax), else the model-selection best


class RecoveryWatcher:
    """``equation_search`` callback: stops the search once a hall-of-fame member is
    equivalent to ``truth``. ``found`` holds that member; ``checks`` counts SymPy checks."""

    def __init__(self, truth, names: Sequence[str], y: np.ndarray, *, tol: float = 1e-6,
                 timeout: float = 5.0, domains: dict[str, tuple[float, float]] | None = None):
        self.truth = truth
        self.domains = domains
        self.names = list(names)
        self.tol = tol
        self.timeout = timeout
        self.threshold = REL_LOSS_THRESHOLD * float(np.var(y)) + 1e-300
        self.found = None
        self.found_at: tuple[int, float, float] | None = None  # iteration, num_evals, seconds
        self.checks = 0
        self._seen: dict[tuple, bool] = {}

    def is_truth(self, tree) -> bool:
        """Cached :func:`~ttsr_bridge.expr.sympy_bridge.equivalent` of a tree and the truth."""
        from ..expr.sympy_bridge import equivalent

        key = tree.key()
        hit = self._seen.get(key)
        if hit is None:
            self.checks += 1
            hit = bool(equivalent(tree, self.truth, self.names, tol=self.tol, timeout=self.timeout,
                                  domains=self.domains))
            self._seen[key] = hit
        return hit

    def __call__(self, iteration: int, hall_of_fame, num_evals: float, seconds: float) -> bool:
        for m in hall_of_fame.existing():
            if m.loss <= self.threshold and self.is_truth(m.tree):
                self.found = m
                self.found_at = (iteration, num_evals, seconds)
                return True
        return False


def _warm_up() -> None:
    """Compile the kernels and start the SymPy worker, so neither counts in a problem's time."""
    from ..expr.sympy_bridge import equivalent
    from ..expr.tree import op, var
    from ..search import SearchConfig, equation_search

    X = np.linspace(-1, 1, 20)[:, None]
    cfg = SearchConfig.preset("pysr", niterations=1, populations=2, ncycles_per_iteration=5, random_state=0)
    equation_search(X, X[:, 0] * 2.0, cfg)
    t = op("*", var(0), var(0))
    equivalent(t, "x**2", ["x"])


def check_problem(problem, *, time_limit: float, seed: int, max_evals: int | None = None,
                  niterations: int = 1_000_000, sympy_timeout: float = 10.0) -> RecoveryResult:
    """Run the ``pysr`` preset on ``problem`` until recovery, ``time_limit`` seconds, or
    ``max_evals`` evaluations. ``sympy_timeout`` bounds each symbolic check (a check that
    runs out counts as "not equivalent")."""
    from ..expr.printer import to_infix
    from ..search import SearchConfig, equation_search

    names = problem.variable_names
    X, y = problem.sample(problem.data_rng(seed))
    ops = problem.operator_set()
    binary, unary = ops.names()
    cfg = SearchConfig.preset("pysr", binary_operators=tuple(binary), unary_operators=tuple(unary),
                              niterations=niterations, timeout_in_seconds=time_limit,
                              max_evals=max_evals, random_state=seed)
    truth = problem.truth()
    watcher = RecoveryWatcher(truth, names, y, timeout=sympy_timeout, domains=problem.domains())
    t0 = time.perf_counter()
    res = equation_search(X, y, cfg, variable_names=names, callback=watcher)
    seconds = time.perf_counter() - t0
    best = res.best()
    best_ok = best is not None and watcher.is_truth(best.tree)
    shown = watcher.found if watcher.found is not None else best
    if watcher.found_at is not None:
        seconds = watcher.found_at[2]
    return RecoveryResult(
        problem=problem.name,
        seed=seed,
        formula=problem.formula,
        recovered=watcher.found is not None,
        best_recovered=bool(best_ok),
        seconds=round(seconds, 2),
        evaluations=float(res.num_evals),
        iterations=int(res.iterations),
        stop_reason=str(res.stats.stop_reason),
        equation=to_infix(shown.tree, names) if shown is not None else "",
    )


def selected_problems(suites: Sequence[str], limits: dict[str, int]):
    """The problems of ``suites`` in order, each suite cut to ``limits[suite]`` problems."""
    from .suites import get_suite

    out = []
    for name in suites:
        probs = get_suite(name)
        n = limits.get(name)
        out.extend(probs[:n] if n is not None else probs)
    return out


def _print_table(results: list[RecoveryResult]) -> None:
    print(f"{'problem':<24} {'seed':>5} {'recovered':>9} {'best':>5} {'seconds':>8} {'evaluations':>12} "
          f"{'iters':>6}  equation")
    for r in results:
        print(f"{r.problem:<24} {r.seed:>5d} {r.recovered!s:>9} {r.best_recovered!s:>5} {r.seconds:>8.1f} "
              f"{r.evaluations:>12.0f} {r.iterations:>6d}  {r.equation}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", action="append", default=None, help="suite name (repeatable; default: harder)")
    ap.add_argument("--limit-nguyen", type=int, default=None, metavar="N", help="only Nguyen-1..N")
    ap.add_argument("--select", action="append", default=[], metavar="NAME",
                    help="only problems with these names / globs (repeatable)")
    ap.add_argument("--time-limit", type=float, default=60.0, metavar="S", help="seconds per problem")
    ap.add_argument("--max-evals", type=int, default=None, help="evaluation budget per problem")
    ap.add_argument("--niterations", type=int, default=1_000_000, metavar="N",
                    help="iteration budget per problem (PySR's default run is 100; default: unbounded)")
    ap.add_argument("--seed", type=int, default=0, help="the (first) seed")
    ap.add_argument("--seeds", type=int, default=1, metavar="K", help="run seeds --seed .. --seed+K-1")
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args(argv)
    if not (args.time_limit > 0 and math.isfinite(args.time_limit)):
        ap.error("--time-limit must be a positive number")
    if args.niterations < 1:
        ap.error("--niterations must be >= 1")
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    if args.limit_nguyen is not None and args.limit_nguyen < 1:
        ap.error("--limit-nguyen must be >= 1")
    suites = args.suite or ["harder"]
    limits = {"nguyen": args.limit_nguyen} if args.limit_nguyen is not None else {}
    from .problems import ProblemError
    from .suites import select_problems

    try:
        problems = selected_problems(suites, limits)
        if args.select:
            problems = list(select_problems(problems, args.select))
    except ProblemError as e:
        ap.error(str(e))
    _warm_up()
    seeds = range(args.seed, args.seed + args.seeds)
    results = []
    for p in problems:
        for seed in seeds:
            r = check_problem(p, time_limit=args.time_limit, seed=seed, max_evals=args.max_evals,
                              niterations=args.niterations)
            results.append(r)
            if not args.json:
                print(f"{r.problem} (seed {seed}): recovered={r.recovered} ({r.seconds:.1f} s, "
                      f"{r.evaluations:.0f} evals)", file=sys.stderr)
    summary = {
        "recovered": sum(r.recovered for r in results),
        "best_recovered": sum(r.best_recovered for r in results),
        "problems": len(problems),
        "runs": len(results),
        "time_limit": args.time_limit,
        "seed": args.seed,
        "seeds": args.seeds,
        "recovered_by_problem": {p.name: sum(r.recovered for r in results if r.problem == p.name)
                                 for p in problems},
    }
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "summary": summary}))
    else:
        _print_table(results)
        print(f"\nrecovered {summary['recovered']}/{summary['runs']} runs "
              f"(model-selection best: {summary['best_recovered']})")
        if args.seeds > 1:
            for name, k in summary["recovered_by_problem"].items():
                print(f"  {name}: {k}/{args.seeds} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
