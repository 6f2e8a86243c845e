"""``ttsr demo``: the main job on an embedded default, with nothing to download or train.

It fits the built-in ``harder`` problems (the seeds' tier) twice with the same data, seed and
evaluation budget: once with the classic engine (PySR's algorithm, ``pysr`` preset) and once
with the shipped default neural proposer taking part of the mutation moves, then prints both
Pareto fronts' best equations, whether each recovered the ground truth, and the evaluations it
took. No Julia, no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="harder", help="built-in suite to run (default: harder)")
    p.add_argument("--limit", type=int, default=3, help="number of problems of the suite (default 3)")
    p.add_argument("--max-evals", type=int, default=150_000, help="evaluation budget per run (default 150000)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per run at most (default 60)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--neural-weight", type=float, default=1.0,
                   help="weight of the neural move among PySR's mutation weights (sum ≈ 8.5; default 1.0)")
    p.add_argument("--json", action="store_true", help="print a JSON line summary at the end")


def _engines(neural_weight: float) -> list[tuple[str, dict]]:
    from .propose.onnx_proposer import default_model_path

    engines: list[tuple[str, dict]] = [("classic", {})]
    try:
        path = default_model_path()
    except FileNotFoundError as e:
        print(f"note: no shipped default model ({e}); running the classic engine only", file=sys.stderr)
        return engines
    engines.append(("neural", {"proposer": str(path), "neural_weight": neural_weight}))
    return engines


def run(args: argparse.Namespace) -> int:
    from .bench.suites import get_suite
    from .expr.printer import to_infix
    from .expr.sympy_bridge import equivalent
    from .regressor import SRRegressor

    problems = list(get_suite(args.suite))[: args.limit]
    rows = []
    for problem in problems:
        X, y = problem.sample(problem.data_rng(args.seed))
        names = list(problem.variable_names)
        truth = problem.truth()
        ops = problem.operators
        print(f"\n== {problem.name}: y = {problem.formula}")
        for engine, extra in _engines(args.neural_weight):
            model = SRRegressor(
                binary_operators=list(ops.names()[0]) if ops else None,
                unary_operators=list(ops.names()[1]) if ops else None,
                max_evals=args.max_evals,
                timeout_in_seconds=args.time_limit,
                random_state=args.seed,
                progress=True,
                **extra,
            )
            t0 = time.perf_counter()
            model.fit(X, y, variable_names=names)
            seconds = time.perf_counter() - t0
            best = model.get_best()
            recovered = bool(equivalent(best["tree"], truth, names, domains=problem.domains()))
            eq = to_infix(best["tree"], names)
            print(f"  {engine:8s} {'RECOVERED' if recovered else 'missed   '}  {eq}   "
                  f"(loss {best['loss']:.3g}, {model.num_evals_:.0f} evals, {seconds:.1f} s)")
            rows.append({"problem": problem.name, "engine": engine, "recovered": recovered, "equation": eq,
                         "loss": float(best["loss"]), "evals": float(model.num_evals_), "seconds": seconds})
    engines = sorted({r["engine"] for r in rows})
    print("\nrecovered per engine: " + ", ".join(
        f"{e} {sum(r['recovered'] for r in rows if r['engine'] == e)}/{sum(r['engine'] == e for r in rows)}" for e in engines))
    if args.json:
        print(json.dumps({"runs": rows}))
    return 0
