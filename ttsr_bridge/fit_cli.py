"""``ttsr fit``: symbolic regression on a CSV file or a problem from a problem file."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "run", "FitInput", "load_fit_input"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data (one of)")
    src.add_argument("--data", type=Path, help="CSV file with a header row")
    src.add_argument("--target", help="target column of --data")
    src.add_argument("--problem", type=Path, help="problem file (YAML, the project's problem-file format)")
    src.add_argument("--name", help="problem name inside --problem")
    p.add_argument("--preset", choices=("pysr", "basic"), default="pysr", help="engine preset (default: pysr)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S", help="wall-clock budget in seconds")
    p.add_argument("--niterations", type=int, default=None, metavar="N",
                   help="number of iterations (default: PySR's 100, unbounded when only --time-limit "
                        "or --max-evals is given)")
    p.add_argument("--max-evals", type=int, default=None, metavar="N", help="evaluation budget")
    p.add_argument("--binary-operators", default=None, help="comma-separated, e.g. '+,-,*,/'")
    p.add_argument("--unary-operators", default=None, help="comma-separated, e.g. 'sin,cos,exp'")
    p.add_argument("--maxsize", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--trace", type=Path, default=None, metavar="OUT.jsonl",
                   help="write an SR.jl-format trace (gzip-compressed when the name ends in .gz)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, metavar="OUT.json", help="write a JSON summary")
    p.add_argument("--proposer", default=None, metavar="MODEL", help="ONNX proposer: a model path or 'default'")
    p.add_argument("--neural-weight", type=float, default=None, metavar="W",
                   help="weight of the neural move among the mutation weights (default: 1.0 with --proposer)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class FitInput:
    """What ``ttsr fit`` fits: data, names, and (for problems) the ground truth formula."""

    X: np.ndarray
    y: np.ndarray
    variable_names: tuple[str, ...]
    source: str
    formula: str | None = None
    binary_operators: tuple[str, ...] | None = None
    unary_operators: tuple[str, ...] | None = None
    domains: dict[str, tuple[float, float]] | None = None  # variable ranges (problem files)


def load_csv(path: Path, target: str) -> FitInput:
    """Read a numeric CSV with :func:`~ttsr_bridge.bench.problems.read_csv_table` (the reader
    ``ttsr bench`` uses): the error names the file, line and column of the first bad cell, and
    column names must be identifiers, since they are the printed equation's variables."""
    from .bench.problems import ProblemError, read_csv_table

    try:
        table = read_csv_table(path, target, min_rows=2)
    except ProblemError as e:
        raise ValueError(str(e)) from None
    return FitInput(np.array(table.X), np.array(table.y), table.feature_names, str(path))


def load_problem(path: Path, name: str | None, seed: int) -> FitInput:
    from .bench.problems import load_problem_file

    problems = load_problem_file(path)
    if name is None:
        if len(problems) != 1:
            raise ValueError(f"{path} holds {len(problems)} problems; pick one with --name: {[p.name for p in problems]}")
        problem = problems[0]
    else:
        matches = [p for p in problems if p.name == name]
        if not matches:
            raise ValueError(f"{path}: no problem named {name!r}; known: {[p.name for p in problems]}")
        problem = matches[0]
    X, y = problem.sample(problem.data_rng(seed))
    ops = problem.operators
    return FitInput(
        X, y, tuple(problem.variable_names), f"{path}:{problem.name}", problem.formula,
        ops.names()[0] if ops is not None else None, ops.names()[1] if ops is not None else None,
        problem.domains(),
    )


def load_fit_input(args: argparse.Namespace) -> FitInput:
    if (args.data is None) == (args.problem is None):
        raise ValueError("give exactly one of --data FILE.csv --target COL, or --problem FILE.yaml [--name NAME]")
    if args.data is not None:
        if not args.target:
            raise ValueError("--data needs --target COL")
        return load_csv(args.data, args.target)
    return load_problem(args.problem, args.name, args.seed)


def _split(s: str | None) -> list[str] | None:
    return None if s is None else [t.strip() for t in s.split(",") if t.strip()]


def run(args: argparse.Namespace) -> int:
    from .regressor import SRRegressor

    try:
        fi = load_fit_input(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    binary = _split(args.binary_operators) or (list(fi.binary_operators) if fi.binary_operators else None)
    unary = _split(args.unary_operators)
    if unary is None and fi.unary_operators is not None:
        unary = list(fi.unary_operators)
    neural_weight = args.neural_weight if args.neural_weight is not None else (1.0 if args.proposer else 0.0)
    niterations = args.niterations
    if niterations is None and (args.time_limit is not None or args.max_evals is not None):
        niterations = 1_000_000  # a time / evaluation budget alone bounds the search
    model = SRRegressor(
        preset=args.preset,
        binary_operators=binary,
        unary_operators=unary,
        niterations=niterations,
        timeout_in_seconds=args.time_limit,
        max_evals=args.max_evals,
        maxsize=args.maxsize,
        random_state=args.seed,
        proposer=args.proposer,
        neural_weight=neural_weight,
        progress=not args.quiet,
        use_tracing=args.trace is not None,
        tracing_file=str(args.trace) if args.trace is not None else None,
    )
    t0 = time.perf_counter()
    try:
        model.fit(fi.X, fi.y, variable_names=list(fi.variable_names))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    summary = summarize(model, fi, seconds)
    print_front(model)
    print(f"\nbest: {summary['best']['equation']}   (loss {summary['best']['loss']:.6g}, "
          f"complexity {summary['best']['complexity']}, {summary['evaluations']:.0f} evaluations, {seconds:.1f} s)")
    if fi.formula is not None:
        print(f"truth: {fi.formula}   recovered: {summary['recovered']}")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def summarize(model, fi: FitInput, seconds: float) -> dict:
    """The JSON summary: best equation (SymPy syntax over the column names), front, budget."""
    from .expr.printer import to_infix

    best = model.get_best()
    summary: dict = {
        "source": fi.source,
        "variables": list(fi.variable_names),
        "best": {
            "equation": to_infix(best["tree"], list(fi.variable_names)),
            "loss": _num(best["loss"]),
            "complexity": int(best["complexity"]),
        },
        "pareto_front": [
            {"complexity": int(r.complexity), "loss": _num(r.loss), "score": _num(r.score),
             "equation": to_infix(r.tree, list(fi.variable_names))}
            for r in model.equations_.itertuples()
        ],
        "evaluations": float(model.num_evals_),
        "seconds": seconds,
        "preset": model.preset,
        "seed": model.random_state,
    }
    stats = model.stats_
    if stats is not None:
        from .config_io import to_mapping

        summary["stop_reason"] = stats.stop_reason
        summary["proposer"] = to_mapping(stats.proposer)
    if fi.formula is not None:
        from .expr.parser import parse_formula
        from .expr.sympy_bridge import equivalent

        truth = parse_formula(fi.formula, list(fi.variable_names))
        summary["truth"] = fi.formula
        summary["recovered"] = bool(equivalent(best["tree"], truth, list(fi.variable_names),
                                               domains=fi.domains))
    return summary


def _num(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def print_front(model) -> None:
    eq = model.equations_
    print(f"{'complexity':>10}  {'loss':>12}  {'score':>9}  equation")
    for r in eq.itertuples():
        print(f"{r.complexity:>10d}  {r.loss:>12.6g}  {r.score:>9.4f}  {r.equation}")
