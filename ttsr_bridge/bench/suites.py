"""Named problem suites and the resolver ``get_suite(name_or_path)``.

Built-in suites (defined here in the problem-file format, validated by the same reader):

* ``ultra-simple`` — five one-variable smoke tests: ``y = x``, ``y = 2``, ``y = x + 1``,
  ``y = 2x``, ``y = x²`` (x ∈ U[-2, 2], 30 points, operators + - * /);
* ``harder`` — five multi-variable formulas a classic search should still recover within a
  modest budget (100 points each; ranges chosen so every formula is finite and varied):

  ======================= =================================== ============================
  ``pythagorean_3d``      ``sqrt(x**2 + y**2 + z**2)``        x, y, z ∈ U[-5, 5]
  ``quadratic_discriminant`` ``b**2 - 4*a*c``                 a, b, c ∈ U[-3, 3]
  ``mixed_polynomial``    ``x**3 - 2*x**2*y + y``             x, y ∈ U[-2, 2]
  ``polynomial_product``  ``(x + 1)*(y - 2)``                 x, y ∈ U[-3, 3]
  ``sphere_area``         ``4*pi*r**2``                       r ∈ U[0.1, 5] (50 points)
  ======================= =================================== ============================

  (operators + - * / and sqrt);
* ``seeds`` — both tiers above;
* ``nguyen`` — Nguyen-1..12 (Uy et al. 2011): U[-1, 1, 20] for 1-6, U[0, 2, 20] for 7,
  U[0, 4, 20] for 8, U[0, 1, 20] for 9-12; operators + - * / sin cos exp log (the Koza set);
* ``pysr-tuning`` — the ten problems of ``pysr_tuning_problems.yaml`` in the shared benchmark
  folder (see :func:`shared_benchmarks_dir`);
* ``feynman[:PATH]``, ``dso[:PATH]`` — the AI Feynman / DSO CSVs (default: the shared folder);
* ``csv:PATH`` — a plain numeric CSV with a header row: one fixed-data problem
  (:class:`~ttsr_bridge.bench.problems.DataProblem`, named after the file stem; target column,
  fit-row cap and held-out fraction from :class:`~ttsr_bridge.bench.problems.CsvOptions`);
* any path to a ``.csv``: its header decides — FeynmanEquations.csv columns → ``feynman:``,
  DSO benchmark columns → ``dso:``, anything else → ``csv:``;
* any path to a problem file (``.yaml``/``.yml``), optionally written ``file:PATH``.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .problems import (
    BenchProblem,
    CsvOptions,
    Problem,
    ProblemError,
    csv_kind,
    load_csv_problem,
    load_dso,
    load_feynman,
    load_problem_file,
    problems_from_mapping,
)

__all__ = [
    "BUILTIN_SUITES",
    "get_suite",
    "list_suites",
    "select_problems",
    "shared_benchmarks_dir",
    "heldout_suite_names",
]

_ARITH = {"binary": ["+", "-", "*", "/"], "unary": []}
_ARITH_SQRT = {"binary": ["+", "-", "*", "/"], "unary": ["sqrt"]}
_KOZA = {"binary": ["+", "-", "*", "/"], "unary": ["sin", "cos", "exp", "log"]}


def _p(name: str, formula: str, variables: dict[str, list[float]], n_points: int) -> dict[str, Any]:
    return {"name": name, "formula": formula, "variables": variables, "n_points": n_points}


_X = {"x": [-2.0, 2.0]}
ULTRA_SIMPLE: dict[str, Any] = {
    "description": "one-variable smoke tests",
    "operators": _ARITH,
    "problems": [
        _p("identity", "x", _X, 30),
        _p("constant_2", "2", _X, 30),
        _p("x_plus_1", "x + 1", _X, 30),
        _p("two_x", "2*x", _X, 30),
        _p("x_squared", "x**2", _X, 30),
    ],
}

HARDER: dict[str, Any] = {
    "description": "multi-variable formulas recoverable with a modest budget",
    "operators": _ARITH_SQRT,
    "problems": [
        _p("pythagorean_3d", "sqrt(x**2 + y**2 + z**2)", {"x": [-5, 5], "y": [-5, 5], "z": [-5, 5]}, 100),
        _p("quadratic_discriminant", "b**2 - 4*a*c", {"a": [-3, 3], "b": [-3, 3], "c": [-3, 3]}, 100),
        _p("mixed_polynomial", "x**3 - 2*x**2*y + y", {"x": [-2, 2], "y": [-2, 2]}, 100),
        _p("polynomial_product", "(x + 1)*(y - 2)", {"x": [-3, 3], "y": [-3, 3]}, 100),
        _p("sphere_area", "4*pi*r**2", {"r": [0.1, 5]}, 50),
    ],
}

_U11 = {"x": [-1, 1]}
NGUYEN: dict[str, Any] = {
    "description": "Nguyen-1..12 (Uy et al. 2011), Koza operator set",
    "operators": _KOZA,
    "problems": [
        _p("nguyen1", "x**3 + x**2 + x", _U11, 20),
        _p("nguyen2", "x**4 + x**3 + x**2 + x", _U11, 20),
        _p("nguyen3", "x**5 + x**4 + x**3 + x**2 + x", _U11, 20),
        _p("nguyen4", "x**6 + x**5 + x**4 + x**3 + x**2 + x", _U11, 20),
        _p("nguyen5", "sin(x**2)*cos(x) - 1", _U11, 20),
        _p("nguyen6", "sin(x) + sin(x + x**2)", _U11, 20),
        _p("nguyen7", "log(x + 1) + log(x**2 + 1)", {"x": [0, 2]}, 20),
        _p("nguyen8", "sqrt(x)", {"x": [0, 4]}, 20),
        _p("nguyen9", "sin(x) + sin(y**2)", {"x": [0, 1], "y": [0, 1]}, 20),
        _p("nguyen10", "2*sin(x)*cos(y)", {"x": [0, 1], "y": [0, 1]}, 20),
        _p("nguyen11", "x**y", {"x": [0, 1], "y": [0, 1]}, 20),
        _p("nguyen12", "x**4 - x**3 + y**2/2 - y", {"x": [0, 1], "y": [0, 1]}, 20),
    ],
}


def shared_benchmarks_dir() -> Path:
    """The shared benchmark folder: ``$TTSR_SHARED_BENCHMARKS``, else ``shared/benchmarks``
    beside the checkout (``<repo>/../shared/benchmarks``), else ``/work/shared/benchmarks``."""
    env = os.environ.get("TTSR_SHARED_BENCHMARKS")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[2]
    candidates += [repo.parent / "shared" / "benchmarks", Path.cwd().parent / "shared" / "benchmarks",
                   Path("/work/shared/benchmarks")]
    for c in candidates:
        if c.is_dir():
            return c
    raise ProblemError(
        "shared benchmark folder not found (set TTSR_SHARED_BENCHMARKS); looked in "
        + ", ".join(str(c) for c in candidates)
    )


def _builtin(data: dict[str, Any], name: str) -> Callable[[], tuple[Problem, ...]]:
    return lambda: problems_from_mapping(data, source=f"suite {name}")


def _pysr_tuning() -> tuple[Problem, ...]:
    return load_problem_file(shared_benchmarks_dir() / "pysr_tuning_problems.yaml")


def _seeds() -> tuple[Problem, ...]:
    return get_suite("ultra-simple") + get_suite("harder")


BUILTIN_SUITES: dict[str, Callable[[], tuple[Problem, ...]]] = {
    "ultra-simple": _builtin(ULTRA_SIMPLE, "ultra-simple"),
    "harder": _builtin(HARDER, "harder"),
    "seeds": _seeds,
    "nguyen": _builtin(NGUYEN, "nguyen"),
    "pysr-tuning": _pysr_tuning,
}

# Suites whose problems synthetic training problems must never duplicate (the held-out set).
# Feynman/DSO are included when the shared folder is available.
_HELDOUT_SUITES = ("seeds", "nguyen", "pysr-tuning", "feynman", "dso")


def heldout_suite_names() -> tuple[str, ...]:
    return _HELDOUT_SUITES


def list_suites() -> list[str]:
    """Names ``get_suite`` accepts (the ``feynman``/``dso`` ones take an optional ``:PATH``)."""
    return [*BUILTIN_SUITES, "feynman[:PATH]", "dso[:PATH]", "csv:PATH (or a .csv path)", "file:PATH (or a .yaml path)"]


def get_suite(name_or_path: str, csv_options: CsvOptions | None = None) -> tuple[BenchProblem, ...]:
    """The problems of a named suite, a ``feynman:``/``dso:``/``csv:``/``file:`` spec, a
    ``.csv`` (kind read from its header) or a problem file. ``csv_options`` (default
    ``CsvOptions()``) applies to plain CSVs only."""
    csv_options = csv_options if csv_options is not None else CsvOptions()
    spec = name_or_path.strip()
    if spec in BUILTIN_SUITES:
        return BUILTIN_SUITES[spec]()
    kind, _, rest = spec.partition(":")
    if kind == "feynman":
        return load_feynman(rest or shared_benchmarks_dir() / "FeynmanEquations.csv")
    if kind == "dso":
        return load_dso(rest or shared_benchmarks_dir() / "dso_benchmarks.csv")
    if kind == "csv" and rest:
        return (load_csv_problem(rest, csv_options),)
    if kind == "file" and rest:
        return load_problem_file(rest)
    if spec.lower().endswith(".csv"):
        return _csv_suite(spec, csv_options)
    if spec.endswith((".yaml", ".yml")) or Path(spec).is_file():
        return load_problem_file(spec)
    raise ProblemError(f"unknown problem suite {name_or_path!r}; known suites: {list_suites()}")


def _csv_suite(path: str, csv_options: CsvOptions) -> tuple[BenchProblem, ...]:
    """A bare ``.csv`` path: Feynman and DSO files are told apart from plain data by their
    header row."""
    kind = csv_kind(path)
    if kind == "feynman":
        return load_feynman(path)
    if kind == "dso":
        return load_dso(path)
    return (load_csv_problem(path, csv_options),)


def select_problems(problems: Sequence[BenchProblem], patterns: Sequence[str]) -> tuple[BenchProblem, ...]:
    """The problems whose name matches one of ``patterns`` (exact names or shell globs), in
    the suite's order; a pattern that matches nothing raises."""
    if not patterns:
        return tuple(problems)
    chosen = []
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(p.name, pat) for p in problems):
            raise ProblemError(f"--select {pat!r} matches no problem; names: {[p.name for p in problems]}")
    for p in problems:
        if any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns):
            chosen.append(p)
    return tuple(chosen)
