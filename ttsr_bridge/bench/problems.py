"""Benchmark problems: a ground-truth formula, its variables' sampling ranges, and readers for
the problem-file YAML format, the AI Feynman CSV and the DSO benchmark CSVs; and fixed-data
problems (:class:`DataProblem`): the rows of a user CSV, without a ground truth.

A :class:`Problem` is a value: it holds the formula as text (SymPy syntax over named variables)
and how to sample it. :meth:`Problem.truth` parses the formula into an :class:`~ttsr_bridge.expr.tree.Expr`
with :func:`ttsr_bridge.expr.parser.parse_formula` (feature ``k`` is ``variables[k]``), and
:meth:`Problem.sample` / :meth:`Problem.sample_test` draw ``(X, y)`` with a caller's
``numpy.random.Generator``.

Sampling follows the DSO benchmark specs:

* ``U[low, high, n]`` — ``n`` points drawn uniformly and independently per variable;
* ``E[low, high, step]`` — evenly spaced points ``low, low+step, ..., high`` (a ``step`` larger
  than ``high - low`` means *that many* points, DSO's convention); several evenly spaced
  variables form the Cartesian grid, and uniform variables are then drawn per grid point.

Points where the truth is not finite (log of a negative number, division by zero) are never
kept: uniform samples are redrawn, grid points are dropped; a formula that is finite on too
small a fraction of its domain is rejected with :class:`ProblemError`.

The problem-file format (YAML)::

    problems:
      - name: keijzer11                      # unique; letters, digits, _ . -
        formula: "x1*x2 + sin((x1 - 1)*(x2 - 1))"
        variables: {x1: [-3, 3], x2: [-3, 3]}   # [low, high] = U; {E: [low, high, step]} = grid
        n_points: 20
        noise: 0.0            # optional: Gaussian noise, std = noise * RMS(y) (SRBench convention)
        seed: 7               # optional: base seed of the problem's data
        test_points: 1000     # optional: held-out points (default 1000)
        test_variables: {x1: [-4, 4], x2: [-4, 4]}   # optional: other held-out ranges
        operators: {binary: ["+", "-", "*", "/"], unary: [sin, cos]}   # optional
    operators: {...}          # optional default for every problem of the file
    description: "..."        # optional

A problem entry may give fixed data instead of a formula (a :class:`DataProblem`)::

      - name: housing                        # optional: default the file stem
        data: housing.csv                    # numeric CSV with a header row (relative: to the YAML)
        target: price                        # optional: default the last column
        n_points: 500                        # optional: cap on fit rows (default 1000)
        test_fraction: 0.25                  # optional: held-out rows per seed
        seed: 3                              # optional; operators: as above

Unknown keys, wrong types, bad ranges and unparsable formulas raise :class:`ProblemError`
naming the file, the problem and the key; bad CSV data names the file, line and column.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import re
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.expr.tree import Expr

__all__ = [
    "ProblemError",
    "VariableSpec",
    "Sampling",
    "Problem",
    "DEFAULT_TEST_POINTS",
    "DEFAULT_OPERATORS",
    "FEYNMAN_OPERATORS",
    "DSO_OPERATOR_NAMES",
    "load_problem_file",
    "problems_from_mapping",
    "problem_from_mapping",
    "problem_to_mapping",
    "dump_problem_file",
    "load_feynman",
    "load_dso",
    "load_dso_function_sets",
    "DataProblem",
    "DataTable",
    "BenchProblem",
    "CsvOptions",
    "DEFAULT_CSV_POINTS",
    "DEFAULT_TEST_FRACTION",
    "MIN_CSV_ROWS",
    "read_csv_table",
    "load_csv_problem",
    "csv_kind",
]

DEFAULT_TEST_POINTS = 1000
# Minimum fraction of the domain on which the truth must be finite (below it sampling fails).
MIN_FINITE_FRACTION = 0.02
# Operators used by engines when neither the problem nor the bench config names any.
DEFAULT_OPERATORS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("+", "-", "*", "/"),
    ("sin", "cos", "exp", "log", "sqrt"),
)
# Everything the 100 AI Feynman formulas use (exp, sqrt, sin, cos, arcsin, tanh, ln).
FEYNMAN_OPERATORS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("+", "-", "*", "/"),
    ("sqrt", "exp", "log", "sin", "cos", "asin", "tanh"),
)
# DSO function-set tokens → PySR operator names. ``None``: not an operator in PySR's sense
# (constants are always available to our engines); tokens missing here are unsupported.
DSO_OPERATOR_NAMES: dict[str, tuple[str, ...] | None] = {
    "add": ("+",),
    "sub": ("-",),
    "mul": ("*",),
    "div": ("/",),
    "pow": ("^",),
    "n2": ("square",),
    "n3": ("cube",),
    "sqrt": ("sqrt",),
    "exp": ("exp",),
    "log": ("log",),
    "sin": ("sin",),
    "cos": ("cos",),
    "tan": ("tan",),
    "tanh": ("tanh",),
    "inv": ("inv",),
    "neg": ("neg",),
    "abs": ("abs",),
    # DSO's expneg(x) = exp(-x): no PySR operator; exp and neg express it.
    "expneg": ("exp", "neg"),
    "const": None,
    "poly": None,  # DSO's polynomial token has no counterpart; dropped (documented)
}

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ProblemError(ValueError):
    """A problem definition or problem file that is invalid, or data that cannot be sampled."""


# ---- sampling specs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VariableSpec:
    """One input variable: ``U[low, high]`` when ``step`` is None, else ``E[low, high, step]``."""

    name: str
    low: float
    high: float
    step: float | None = None

    def __post_init__(self) -> None:
        if not _IDENT_RE.match(self.name):
            raise ProblemError(f"variable name {self.name!r} is not an identifier")
        for what, v in (("low", self.low), ("high", self.high)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ProblemError(f"variable {self.name!r}: {what} must be a finite number, got {v!r}")
        if not self.low < self.high:
            raise ProblemError(f"variable {self.name!r}: need low < high, got [{self.low}, {self.high}]")
        if self.step is not None and not (math.isfinite(self.step) and self.step > 0):
            raise ProblemError(f"variable {self.name!r}: step must be > 0, got {self.step!r}")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    @property
    def is_grid(self) -> bool:
        return self.step is not None

    def grid(self) -> np.ndarray:
        """The evenly spaced points of an ``E`` spec (DSO semantics, see the module docstring)."""
        if self.step is None:
            raise ProblemError(f"variable {self.name!r} is uniform, not a grid")
        span = self.high - self.low
        if self.step > span:
            n = int(self.step)
        else:
            # DSO truncates (int(2/0.1) == 19); the small tolerance keeps the exact grid.
            n = int(math.floor(span / self.step + 1e-9)) + 1
        return np.linspace(self.low, self.high, max(n, 1))

    def uniform(self) -> "VariableSpec":
        return VariableSpec(self.name, self.low, self.high)


@dataclass(frozen=True)
class Sampling:
    """How to draw inputs: the variables' specs and the number of points (``None``: the full
    grid of the ``E`` variables)."""

    variables: tuple[VariableSpec, ...]
    n_points: int | None = None

    def __post_init__(self) -> None:
        if not self.variables:
            raise ProblemError("a sampling needs at least one variable")
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ProblemError(f"duplicate variable names: {names}")
        if self.n_points is not None and self.n_points < 1:
            raise ProblemError(f"n_points must be >= 1, got {self.n_points}")
        if self.n_points is None and not any(v.is_grid for v in self.variables):
            raise ProblemError("n_points is required when no variable is an evenly spaced grid")

    @property
    def grid_size(self) -> int | None:
        grids = [v.grid().size for v in self.variables if v.is_grid]
        return int(np.prod(grids)) if grids else None

    def size(self, n: int | None = None) -> int:
        """Number of points a draw asks for (before rejection of non-finite truth values)."""
        g = self.grid_size
        want = n if n is not None else self.n_points
        if g is None:
            assert want is not None
            return want
        return g if want is None else min(want, g)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` fresh uniform rows (grid variables use their own grid points at random)."""
        cols = []
        for v in self.variables:
            if v.is_grid:
                cols.append(rng.choice(v.grid(), size=n))
            else:
                cols.append(rng.uniform(v.low, v.high, size=n))
        return np.column_stack(cols).astype(np.float64)

    def grid_rows(self, rng: np.random.Generator) -> np.ndarray:
        """The Cartesian grid of the ``E`` variables; ``U`` variables drawn per grid point."""
        grids = [v.grid() for v in self.variables if v.is_grid]
        mesh = np.meshgrid(*grids, indexing="ij")
        flat = [m.reshape(-1) for m in mesh]
        n = flat[0].size
        cols, k = [], 0
        for v in self.variables:
            if v.is_grid:
                cols.append(flat[k])
                k += 1
            else:
                cols.append(rng.uniform(v.low, v.high, size=n))
        return np.column_stack(cols).astype(np.float64)


# ---- truth evaluation ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def _parse_cached(formula: str, names: tuple[str, ...]) -> Expr:
    from ttsr_bridge.expr.parser import parse_formula

    return parse_formula(formula, list(names))


def _data_rng(seed: int | None, name: str, run_seed: int) -> np.random.Generator:
    """The data generator of one (problem, benchmark seed): from the problem's ``seed``, or a
    stable hash of its name, and ``run_seed``."""
    base = seed if seed is not None else zlib.crc32(name.encode())
    return np.random.default_rng([int(base), int(run_seed)])


# ---- the problem ---------------------------------------------------------------------------------
class _OperatorChoice:
    """The operator-set methods shared by both problem kinds (a dataclass with ``operators``)."""

    operators: OperatorSet | None

    def with_operators(self, operators: OperatorSet | None):
        """A copy with ``operators`` (``None``: the bench's default set)."""
        return replace(self, operators=operators)

    def operator_set(self, default: OperatorSet | None = None) -> OperatorSet:
        """The problem's operators, else ``default``, else :data:`DEFAULT_OPERATORS`."""
        if self.operators is not None:
            return self.operators
        if default is not None:
            return default
        return OperatorSet.from_names(*DEFAULT_OPERATORS)


@dataclass(frozen=True)
class Problem(_OperatorChoice):
    """A symbolic-regression benchmark problem (see the module docstring).

    ``n_points`` is the number of training points (``None``: the full ``E`` grid);
    ``noise`` the relative Gaussian noise on training targets (std = noise × RMS(y));
    ``seed`` the base seed of the problem's data (``None``: derived from the name);
    ``operators`` the operator set engines must use (``None``: the bench default);
    ``test_sampling`` the held-out sampling (``None``: ``test_points`` uniform points over the
    training ranges).
    """

    name: str
    formula: str
    variables: tuple[VariableSpec, ...]
    n_points: int | None
    noise: float = 0.0
    seed: int | None = None
    operators: OperatorSet | None = None
    test_sampling: Sampling | None = None
    test_points: int = DEFAULT_TEST_POINTS
    source: str = field(default="", compare=False)

    # A formula problem can be checked for exact recovery (see :class:`DataProblem`).
    has_truth: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ProblemError(f"problem name {self.name!r}: use letters, digits, '_', '.', '-'")
        if not isinstance(self.formula, str) or not self.formula.strip():
            raise ProblemError(f"problem {self.name!r}: formula must be a non-empty string")
        if not isinstance(self.variables, tuple):
            object.__setattr__(self, "variables", tuple(self.variables))
        try:
            Sampling(self.variables, self.n_points)
        except ProblemError as e:
            raise ProblemError(f"problem {self.name!r}: {e}") from None
        if not (isinstance(self.noise, (int, float)) and math.isfinite(self.noise) and self.noise >= 0):
            raise ProblemError(f"problem {self.name!r}: noise must be a number >= 0, got {self.noise!r}")
        if self.test_points < 1:
            raise ProblemError(f"problem {self.name!r}: test_points must be >= 1")
        if self.test_sampling is not None:
            if [v.name for v in self.test_sampling.variables] != self.variable_names:
                raise ProblemError(
                    f"problem {self.name!r}: test variables {[v.name for v in self.test_sampling.variables]} "
                    f"differ from the training variables {self.variable_names}"
                )

    # -- structure --
    @property
    def variable_names(self) -> list[str]:
        return [v.name for v in self.variables]

    @property
    def nfeatures(self) -> int:
        return len(self.variables)

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.variables, self.n_points)

    @property
    def held_out_sampling(self) -> Sampling:
        if self.test_sampling is not None:
            return self.test_sampling
        return Sampling(tuple(v.uniform() for v in self.variables), self.test_points)

    def domains(self) -> dict[str, tuple[float, float]]:
        """Each variable's range over training and held-out sampling (``equivalent``'s
        ``domains``: a variable that is never negative there makes log/sqrt identities hold)."""
        return {v.name: (min(v.low, t.low), max(v.high, t.high))
                for v, t in zip(self.variables, self.held_out_sampling.variables)}

    def truth(self) -> Expr:
        """The ground truth as an ``Expr`` (feature ``k`` = ``variables[k]``)."""
        try:
            return _parse_cached(self.formula, tuple(self.variable_names)).copy()
        except ValueError as e:  # ParseError is a ValueError
            raise ProblemError(f"problem {self.name!r}: cannot parse formula {self.formula!r}: {e}") from None

    def evaluate(self, X: np.ndarray) -> np.ndarray:
        """The noiseless truth on ``X`` (shape ``(n, nfeatures)``); NaN where undefined."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.nfeatures:
            raise ProblemError(f"problem {self.name!r}: X must have shape (n, {self.nfeatures}), got {X.shape}")
        from ttsr_bridge.expr.evaluate import evaluate

        return evaluate(self.truth(), X)

    def data_rng(self, run_seed: int) -> np.random.Generator:
        """The generator of the data of one benchmark seed: from ``seed`` (or a stable hash of
        the name) and ``run_seed``, so every engine sees the same points."""
        return _data_rng(self.seed, self.name, run_seed)

    def bench_data(self, run_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(X, y, X_test, y_test)`` of one benchmark seed, shared by every engine: training
        and held-out points drawn from two independent streams of :meth:`data_rng`."""
        train_rng, test_rng = self.data_rng(run_seed).spawn(2)
        X, y = self.sample(train_rng)
        X_test, y_test = self.sample_test(test_rng)
        return X, y, X_test, y_test

    # -- sampling --
    def sample(self, rng: np.random.Generator, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Training data ``(X (n, nfeatures), y (n,))``, with the problem's noise."""
        X, y = self._finite_sample(self.sampling, rng, n)
        if self.noise > 0:
            rms = float(np.sqrt(np.mean(y * y)))
            y = y + rng.normal(0.0, self.noise * rms, size=y.shape)
        return X, y

    def sample_test(self, rng: np.random.Generator, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Held-out data ``(X, y)`` without noise (for R² against the truth)."""
        return self._finite_sample(self.held_out_sampling, rng, n)

    def _finite_sample(self, s: Sampling, rng: np.random.Generator, n: int | None) -> tuple[np.ndarray, np.ndarray]:
        want = s.size(n)
        if s.grid_size is None:
            return self._rejection_sample(s, rng, want)
        X, y = self._keep_finite_grid(s.grid_rows(rng))
        if want < len(y):  # a subset of the grid was asked for
            idx = np.sort(rng.choice(len(y), size=want, replace=False))
            X, y = X[idx], y[idx]
        return X, y

    def _keep_finite_grid(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        y = self.evaluate(X)
        ok = np.isfinite(y)
        if ok.mean() < 0.5:
            raise ProblemError(
                f"problem {self.name!r}: the truth is finite on only {ok.sum()}/{ok.size} grid points"
            )
        return X[ok], y[ok]

    def _rejection_sample(self, s: Sampling, rng: np.random.Generator, want: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw until ``want`` points have a finite truth; reject formulas finite on too
        small a part of their domain."""
        Xs, ys, drawn, kept = [], [], 0, 0
        while kept < want:
            rate = kept / drawn if drawn else 1.0
            if drawn >= 1000 and rate < MIN_FINITE_FRACTION:
                raise ProblemError(
                    f"problem {self.name!r}: the truth is finite on only {kept}/{drawn} sampled points "
                    f"(< {MIN_FINITE_FRACTION:.0%}); check the variable ranges"
                )
            batch = int(min(max((want - kept) / max(rate, MIN_FINITE_FRACTION) * 1.2, want - kept), 1_000_000))
            X = s.draw(rng, max(batch, 1))
            y = self.evaluate(X)
            ok = np.isfinite(y)
            Xs.append(X[ok])
            ys.append(y[ok])
            drawn += len(y)
            kept += int(ok.sum())
        X = np.concatenate(Xs)[:want]
        y = np.concatenate(ys)[:want]
        return X, y



# ---- problem-file format -------------------------------------------------------------------------
_PROBLEM_KEYS = {
    "name", "formula", "variables", "n_points", "noise", "seed", "test_points", "test_variables",
    "operators", "description",
}
_FILE_KEYS = {"problems", "operators", "description", "name"}


def _where(source: str, i: int | None, name: str | None) -> str:
    parts = [source] if source else []
    if i is not None:
        parts.append(f"problems[{i}]" + (f" ({name})" if name else ""))
    return ": ".join(parts) if parts else "problem"


def _number(v: Any, where: str, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProblemError(f"{where}: {what} must be a number, got {v!r}")
    return float(v)


def _parse_variable(name: Any, spec: Any, where: str) -> VariableSpec:
    if not isinstance(name, str):
        raise ProblemError(f"{where}: variable name {name!r} must be a string")
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise ProblemError(f"{where}: variable {name!r}: expected [low, high], got {spec!r}")
        low, high = (_number(x, where, f"variable {name!r} bound") for x in spec)
        return VariableSpec(name, low, high)
    if isinstance(spec, Mapping):
        if set(spec) == {"U"} and isinstance(spec["U"], (list, tuple)) and len(spec["U"]) == 2:
            low, high = (_number(x, where, f"variable {name!r} bound") for x in spec["U"])
            return VariableSpec(name, low, high)
        if set(spec) == {"E"} and isinstance(spec["E"], (list, tuple)) and len(spec["E"]) == 3:
            low, high, step = (_number(x, where, f"variable {name!r} E spec") for x in spec["E"])
            return VariableSpec(name, low, high, step)
    raise ProblemError(
        f"{where}: variable {name!r}: expected [low, high], {{U: [low, high]}} or "
        f"{{E: [low, high, step]}}, got {spec!r}"
    )


def _parse_variables(spec: Any, where: str, key: str = "variables") -> tuple[VariableSpec, ...]:
    if not isinstance(spec, Mapping) or not spec:
        raise ProblemError(f"{where}: {key} must be a non-empty mapping {{name: [low, high]}}, got {spec!r}")
    try:
        return tuple(_parse_variable(k, v, where) for k, v in spec.items())
    except ProblemError as e:
        msg = str(e)
        raise ProblemError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _parse_operators(spec: Any, where: str) -> OperatorSet | None:
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or not set(spec) <= {"binary", "unary"} or "binary" not in spec:
        raise ProblemError(f"{where}: operators must be {{binary: [...], unary: [...]}}, got {spec!r}")
    binary, unary = spec.get("binary") or [], spec.get("unary") or []
    for lst in (binary, unary):
        if not isinstance(lst, (list, tuple)) or not all(isinstance(s, str) for s in lst):
            raise ProblemError(f"{where}: operator lists must be lists of names, got {lst!r}")
    try:
        return OperatorSet.from_names(list(binary), list(unary))
    except (KeyError, ValueError) as e:
        raise ProblemError(f"{where}: {e.args[0] if e.args else e}") from None


def _int_field(m: Mapping, key: str, where: str, *, minimum: int) -> int | None:
    v = m.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ProblemError(f"{where}: {key} must be an integer >= {minimum}, got {v!r}")
    return v


def problem_from_mapping(
    m: Any, *, source: str = "", index: int | None = None, default_operators: OperatorSet | None = None,
    base_dir: Path | None = None,
) -> BenchProblem:
    """One problem of the problem-file format (strictly validated; the formula is parsed).
    An entry with ``data`` instead of ``formula`` is a :class:`DataProblem` (its CSV is read;
    a relative path is taken from ``base_dir``)."""
    where = _where(source, index, None)
    if not isinstance(m, Mapping):
        raise ProblemError(f"{where}: expected a mapping, got {type(m).__name__}")
    name = m.get("name")
    where = _where(source, index, name if isinstance(name, str) else None)
    if "data" in m:
        return _data_problem_from_mapping(m, where, default_operators, base_dir)
    unknown = sorted(set(m) - _PROBLEM_KEYS)
    if unknown:
        raise ProblemError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(_PROBLEM_KEYS)}")
    for key in ("name", "formula", "variables"):
        if key not in m:
            raise ProblemError(f"{where}: missing required key {key!r}")
    if not isinstance(m["formula"], str):
        raise ProblemError(f"{where}: formula must be a string, got {m['formula']!r}")
    variables = _parse_variables(m["variables"], where)
    test_vars = m.get("test_variables")
    n_points = _int_field(m, "n_points", where, minimum=1)
    test_points = _int_field(m, "test_points", where, minimum=1) or DEFAULT_TEST_POINTS
    seed = _int_field(m, "seed", where, minimum=0)
    noise = _number(m.get("noise", 0.0), where, "noise")
    try:
        test_sampling = None
        if test_vars is not None:
            tv = _parse_variables(test_vars, where, "test_variables")
            test_sampling = Sampling(tv, test_points if not all(v.is_grid for v in tv) else None)
        p = Problem(
            name=name, formula=m["formula"], variables=variables, n_points=n_points, noise=noise,
            seed=seed, operators=_parse_operators(m.get("operators"), where) or default_operators,
            test_sampling=test_sampling, test_points=test_points, source=source,
        )
    except ProblemError as e:
        msg = str(e)
        raise ProblemError(msg if msg.startswith(where) else f"{where}: {msg}") from None
    try:
        p.truth()  # parse now: a bad formula is a file error, not a mid-benchmark crash
    except ProblemError as e:
        raise ProblemError(f"{where}: {e}") from None
    return p


def problems_from_mapping(data: Any, *, source: str = "", base_dir: Path | None = None) -> tuple[BenchProblem, ...]:
    """All problems of a parsed problem file (names must be unique)."""
    where = source or "problem file"
    if not isinstance(data, Mapping):
        raise ProblemError(f"{where}: top level must be a mapping with a 'problems' list")
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ProblemError(f"{where}: unknown top-level key(s) {unknown}; known keys: {sorted(_FILE_KEYS)}")
    items = data.get("problems")
    if not isinstance(items, list) or not items:
        raise ProblemError(f"{where}: 'problems' must be a non-empty list")
    default_ops = _parse_operators(data.get("operators"), where)
    problems = tuple(
        problem_from_mapping(m, source=source, index=i, default_operators=default_ops, base_dir=base_dir)
        for i, m in enumerate(items)
    )
    _check_unique(problems, where)
    return problems


def _check_unique(problems: Sequence[BenchProblem], where: str) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.name in seen:
            raise ProblemError(f"{where}: duplicate problem name {p.name!r}")
        seen.add(p.name)


def load_problem_file(path: str | Path) -> tuple[BenchProblem, ...]:
    """Read a problem file (YAML, see the module docstring; ``data:`` paths are relative to
    the file's folder)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ProblemError(f"problem file not found: {p}")
    try:
        with p.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        raise ProblemError(f"{p}: not valid YAML: {e}") from None
    return problems_from_mapping(data, source=str(p), base_dir=p.resolve().parent)


def _variable_to_yaml(v: VariableSpec) -> Any:
    return [v.low, v.high] if v.step is None else {"E": [v.low, v.high, v.step]}


def problem_to_mapping(p: BenchProblem) -> dict[str, Any]:
    """The problem in the problem-file format (inverse of :func:`problem_from_mapping`; a
    :class:`DataProblem` keeps its CSV's absolute path)."""
    if isinstance(p, DataProblem):
        return _data_problem_to_mapping(p)
    m: dict[str, Any] = {
        "name": p.name,
        "formula": p.formula,
        "variables": {v.name: _variable_to_yaml(v) for v in p.variables},
    }
    if p.n_points is not None:
        m["n_points"] = p.n_points
    if p.noise:
        m["noise"] = p.noise
    if p.seed is not None:
        m["seed"] = p.seed
    if p.test_points != DEFAULT_TEST_POINTS:
        m["test_points"] = p.test_points
    if p.test_sampling is not None:
        m["test_variables"] = {v.name: _variable_to_yaml(v) for v in p.test_sampling.variables}
        if p.test_sampling.n_points is not None:
            m["test_points"] = p.test_sampling.n_points
    if p.operators is not None:
        b, u = p.operators.names()
        m["operators"] = {"binary": list(b), "unary": list(u)}
    return m


def dump_problem_file(problems: Sequence[BenchProblem], path: str | Path, *, description: str = "") -> Path:
    """Write problems as a problem file that :func:`load_problem_file` reads back."""
    import yaml

    data: dict[str, Any] = {}
    if description:
        data["description"] = description
    data["problems"] = [problem_to_mapping(p) for p in problems]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False, width=120), encoding="utf-8")
    return out


# ---- AI Feynman ----------------------------------------------------------------------------------
def load_feynman(
    path: str | Path,
    *,
    n_points: int = 1000,
    test_points: int = DEFAULT_TEST_POINTS,
    operators: tuple[tuple[str, ...], tuple[str, ...]] | None = FEYNMAN_OPERATORS,
) -> tuple[Problem, ...]:
    """The AI Feynman equations of ``FeynmanEquations.csv`` (columns ``Filename, Number,
    Output, Formula, # variables, v1_name, v1_low, v1_high, ...``; a UTF-8 BOM is accepted).

    Problem names are the ``Filename`` column (``I.6.2a``). The ranges carry no units: they
    are the dimensionless ranges of the AI Feynman data sets. Uniform sampling, ``n_points``
    per problem; ``operators`` = (binary, unary) names (``None``: the bench default).
    """
    p = Path(path)
    if not p.is_file():
        raise ProblemError(f"Feynman file not found: {p}")
    ops = OperatorSet.from_names(*operators) if operators is not None else None
    problems = []
    with p.open(encoding="utf-8-sig", newline="") as fh:  # utf-8-sig strips the BOM
        reader = csv.DictReader(fh)
        need = {"Filename", "Formula", "# variables"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ProblemError(f"{p}: not a FeynmanEquations.csv (need columns {sorted(need)}, got {reader.fieldnames})")
        for lineno, row in enumerate(reader, start=2):
            if not (row.get("Filename") or "").strip():
                continue  # trailing blank lines
            problems.append(_feynman_row(row, f"{p}:{lineno}", n_points, test_points, ops))
    _check_unique(problems, str(p))
    return tuple(problems)


def _feynman_row(row: Mapping[str, str], where: str, n_points: int, test_points: int, ops: OperatorSet | None) -> Problem:
    name = row["Filename"].strip()
    try:
        nvars = int(float(row["# variables"]))
    except ValueError:
        raise ProblemError(f"{where} ({name}): bad '# variables' {row['# variables']!r}") from None
    variables = []
    for k in range(1, nvars + 1):
        vname = (row.get(f"v{k}_name") or "").strip()
        try:
            low, high = float(row[f"v{k}_low"]), float(row[f"v{k}_high"])
        except (KeyError, TypeError, ValueError):
            raise ProblemError(f"{where} ({name}): bad range for variable {k}") from None
        variables.append(VariableSpec(vname, low, high))
    prob = Problem(
        name=name, formula=row["Formula"].strip(), variables=tuple(variables), n_points=n_points,
        operators=ops, test_points=test_points, source=where,
    )
    prob.truth()
    return prob


# ---- DSO benchmarks ------------------------------------------------------------------------------
def load_dso_function_sets(path: str | Path) -> dict[str, tuple[str, ...]]:
    """``dso_function_sets.csv``: function-set name → its DSO tokens."""
    p = Path(path)
    if not p.is_file():
        raise ProblemError(f"DSO function-set file not found: {p}")
    out: dict[str, tuple[str, ...]] = {}
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"name", "function_set"} <= set(reader.fieldnames):
            raise ProblemError(f"{p}: need columns name,function_set; got {reader.fieldnames}")
        for row in reader:
            out[row["name"].strip()] = tuple(t.strip() for t in row["function_set"].split(",") if t.strip())
    return out


def dso_operator_set(tokens: Sequence[str], where: str = "") -> OperatorSet:
    """Map DSO function-set tokens to an :class:`OperatorSet` (numbers and ``const`` mean
    constants, always available to our engines; ``poly`` is dropped)."""
    binary: list[str] = []
    unary: list[str] = []
    for tok in tokens:
        if _NUMBER_RE.match(tok):
            continue  # a fixed constant token (1.0, 3.14159...): our engines have free constants
        if tok not in DSO_OPERATOR_NAMES:
            raise ProblemError(f"{where}: unknown DSO function token {tok!r}; known: {sorted(DSO_OPERATOR_NAMES)}")
        for name in DSO_OPERATOR_NAMES[tok] or ():
            from ttsr_bridge.expr.operators import get_operator

            target = binary if get_operator(name).arity == 2 else unary
            if name not in target:
                target.append(name)
    return OperatorSet.from_names(binary, unary)


def _dso_spec(text: str, nvars: int, where: str) -> tuple[tuple[VariableSpec, ...], int | None] | None:
    """A DSO train/test spec (``{"all": {"U": [low, high, n]}}`` or per-variable ``x1``...)."""
    if text.strip() in ("", "None"):
        return None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProblemError(f"{where}: bad sampling spec {text!r}: {e}") from None
    if not isinstance(spec, dict):
        raise ProblemError(f"{where}: sampling spec must be a JSON object, got {text!r}")
    variables, counts = [], set()
    for i in range(1, nvars + 1):
        key = "all" if "all" in spec else (f"x{i}" if f"x{i}" in spec else "x1")  # DSO's lookup order
        entry = spec.get(key)
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in ("U", "E"):
            raise ProblemError(f"{where}: spec for x{i} must be {{'U': [...]}} or {{'E': [...]}}, got {entry!r}")
        kind, vals = next(iter(entry.items()))
        if not isinstance(vals, list) or len(vals) != 3:
            raise ProblemError(f"{where}: {kind} spec needs [low, high, n|step], got {vals!r}")
        low, high, third = (_number(v, where, f"{kind} spec") for v in vals)
        if kind == "U":
            variables.append(VariableSpec(f"x{i}", low, high))
            counts.add(int(third))
        else:
            variables.append(VariableSpec(f"x{i}", low, high, third))
    if len(counts) > 1:
        raise ProblemError(f"{where}: uniform variables with different point counts {sorted(counts)}")
    return tuple(variables), (counts.pop() if counts else None)


def load_dso(
    path: str | Path,
    function_sets_path: str | Path | None = None,
    *,
    skip_unsupported: bool = True,
    test_points: int = DEFAULT_TEST_POINTS,
) -> tuple[Problem, ...]:
    """The DSO benchmarks of ``dso_benchmarks.csv`` (columns ``name, variables, expression,
    train_spec, test_spec, function_set``). Variables are ``x1..xn``.

    ``function_sets_path`` (default: ``dso_function_sets.csv`` beside ``path`` when present)
    maps each problem's function set to its operator set (:data:`DSO_OPERATOR_NAMES`).
    A row whose formula uses a function the parser does not know (``harmonic``) or whose
    truth cannot be sampled is skipped with a warning naming it (``skip_unsupported=False``:
    raise). ``test_spec = None`` means held-out points drawn uniformly over the train ranges.
    """
    p = Path(path)
    if not p.is_file():
        raise ProblemError(f"DSO benchmark file not found: {p}")
    if function_sets_path is None and (p.parent / "dso_function_sets.csv").is_file():
        function_sets_path = p.parent / "dso_function_sets.csv"
    fsets = load_dso_function_sets(function_sets_path) if function_sets_path is not None else {}
    problems, skipped = [], []
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"name", "variables", "expression", "train_spec", "test_spec", "function_set"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise ProblemError(f"{p}: not a DSO benchmark file (need columns {sorted(need)}, got {reader.fieldnames})")
        for lineno, row in enumerate(reader, start=2):
            if not (row.get("name") or "").strip():
                continue
            where = f"{p}:{lineno} ({row['name'].strip()})"
            try:
                problems.append(_dso_row(row, where, fsets, test_points, str(p)))
            except ProblemError as e:
                if not skip_unsupported:
                    raise
                skipped.append(f"{row['name'].strip()}: {e}")
    if skipped:
        warnings.warn(f"{p}: skipped {len(skipped)} DSO problem(s): " + "; ".join(skipped), stacklevel=2)
    _check_unique(problems, str(p))
    return tuple(problems)


def _dso_row(row: Mapping[str, str], where: str, fsets: Mapping[str, tuple[str, ...]], test_points: int, source: str) -> Problem:
    name = row["name"].strip()
    try:
        nvars = int(row["variables"])
    except ValueError:
        raise ProblemError(f"{where}: bad variable count {row['variables']!r}") from None
    train = _dso_spec(row["train_spec"], nvars, where)
    if train is None:
        raise ProblemError(f"{where}: missing train_spec")
    variables, n_points = train
    test = _dso_spec(row["test_spec"], nvars, where)
    test_sampling = Sampling(*test) if test is not None else None
    ops = None
    fs = row["function_set"].strip()
    if fsets:
        if fs not in fsets:
            raise ProblemError(f"{where}: unknown function set {fs!r}")
        ops = dso_operator_set(fsets[fs], where)
    prob = Problem(
        name=name, formula=row["expression"].strip(), variables=variables, n_points=n_points,
        operators=ops, test_sampling=test_sampling, test_points=test_points, source=source,
    )
    prob.truth()
    # Reject now what cannot be sampled (a formula finite almost nowhere on its domain).
    prob.sample(np.random.default_rng(0), n=min(prob.sampling.size(), 64))
    return prob


# ---- fixed-data problems (a user CSV) ------------------------------------------------------------
# Defaults of a plain-CSV problem: at most this many fit rows, this fraction held out for R².
DEFAULT_CSV_POINTS = 1000
DEFAULT_TEST_FRACTION = 0.25
# Fewest data rows a CSV problem accepts (a 25% split then leaves 3 fit rows and 1 test row).
MIN_CSV_ROWS = 4
_NON_FINITE_WORDS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
_FEYNMAN_COLUMNS = frozenset({"Filename", "Formula", "# variables"})
_DSO_COLUMNS = frozenset({"name", "variables", "expression", "train_spec", "test_spec", "function_set"})


@dataclass(frozen=True)
class CsvOptions:
    """How a plain CSV becomes a :class:`DataProblem`: the ``target`` column (``None``: the
    last column), the cap ``n_points`` on fit rows and the held-out ``test_fraction``."""

    target: str | None = None
    n_points: int = DEFAULT_CSV_POINTS
    test_fraction: float = DEFAULT_TEST_FRACTION

    def __post_init__(self) -> None:
        if isinstance(self.n_points, bool) or not isinstance(self.n_points, int) or self.n_points < 1:
            raise ProblemError(f"CSV n_points must be an integer >= 1, got {self.n_points!r}")
        if isinstance(self.test_fraction, bool) or not (
            isinstance(self.test_fraction, (int, float)) and 0.0 < self.test_fraction < 1.0
        ):
            raise ProblemError(f"CSV test_fraction must be in (0, 1), got {self.test_fraction!r}")


@dataclass(frozen=True, eq=False)
class DataTable:
    """The numeric rows of a CSV: features ``X`` (n, d) and target ``y`` (n,), read-only."""

    path: str
    feature_names: tuple[str, ...]
    target: str
    X: np.ndarray
    y: np.ndarray


def _reserved_names() -> frozenset[str]:
    """Names a column may not take: operator/function spellings (PySR refuses variables named
    like a function, and a model printed with such a name would not read back)."""
    from ttsr_bridge.expr.operators import OPERATORS

    names: set[str] = set()
    for o in OPERATORS.values():
        names.update(n for n in (o.name, o.julia, *o.aliases) if n)
    names.update({"Abs", "Max", "Min", "Mod", "pow", "ln", "arcsin", "arccos", "arctan"})
    return frozenset(names)


def _check_column_names(header: Sequence[str], where: str) -> tuple[str, ...]:
    """The header's column names, validated as variable names every engine accepts."""
    names = tuple(h.strip() for h in header)
    if len(names) < 2:
        hint = " (only comma-separated files are read)" if names and any(c in names[0] for c in ";\t|") else ""
        raise ProblemError(f"{where}: need at least two columns (features and a target), got {list(names)}{hint}")
    if all(_NUMBER_RE.match(n) for n in names):
        raise ProblemError(f"{where}:1: the first line looks like data; the CSV needs a header row of column names")
    reserved = _reserved_names()
    for k, n in enumerate(names, start=1):
        if not n:
            raise ProblemError(f"{where}:1: column {k} has no name")
        if not _IDENT_RE.match(n):
            raise ProblemError(
                f"{where}:1: column name {n!r} is not an identifier (letters, digits and '_', not "
                f"starting with a digit); rename it: column names are the engines' variable names"
            )
        if n in reserved:
            raise ProblemError(f"{where}:1: column name {n!r} is an operator/function name; rename it")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ProblemError(f"{where}:1: duplicate column name(s) {dupes}")
    return names


def _read_rows(reader, where: str, ncols: int) -> tuple[list[list[str]], list[int]]:
    """The data rows (cells as text) after the header, with their line numbers in the file;
    blank lines are skipped."""
    rows: list[list[str]] = []
    lines: list[int] = []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue  # a blank line, or an all-empty ",,," row a spreadsheet left behind
        if len(cells) != ncols:
            raise ProblemError(f"{where}:{reader.line_num}: expected {ncols} cells, got {len(cells)}")
        rows.append(cells)
        lines.append(reader.line_num)
    return rows, lines


def _bad_cell(text: str, where: str, line: int, column: str) -> ProblemError:
    """The error for a cell that is not a finite number, saying what is wrong with it."""
    t = text.strip()
    at = f"{where}:{line}, column {column!r}"
    if not t:
        return ProblemError(f"{at}: empty cell (missing values are not supported; drop or impute the row)")
    if t.lower() in _NON_FINITE_WORDS or _NUMBER_RE.match(t):  # a number that overflows: 1e999
        return ProblemError(f"{at}: non-finite value {t!r} (drop or impute the row)")
    return ProblemError(f"{at}: {t!r} is not a number (every column must be numeric)")


def _numeric_column(cells: Sequence[str], where: str, lines: Sequence[int], column: str) -> np.ndarray:
    """One column as float64; the first empty, non-numeric or non-finite cell raises."""
    values = np.empty(len(cells), dtype=np.float64)
    for i, c in enumerate(cells):
        t = c.strip()
        if not _NUMBER_RE.match(t):  # float() alone would take "nan", "inf" and "1_0"
            raise _bad_cell(c, where, lines[i], column)
        values[i] = float(t)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise _bad_cell(cells[int(bad[0])], where, lines[int(bad[0])], column)
    return values


def read_csv_table(path: str | Path, target: str | None = None, *, min_rows: int = MIN_CSV_ROWS) -> DataTable:
    """Read a numeric CSV with a header row (comma-separated, UTF-8; a BOM is accepted).

    ``target``: the target column (``None``: the last one); every other column is a feature,
    in file order. Column names must be identifiers and not operator names (they are the
    variable names the engines print). Raises :class:`ProblemError` naming the file, line and
    column of the first fault: empty file, a single column, a missing target, fewer than
    ``min_rows`` rows, a row with the wrong number of cells, an empty, non-numeric or
    non-finite cell.
    """
    p = Path(path)
    if not p.is_file():
        raise ProblemError(f"data file not found: {p}")
    where = str(p)
    try:
        with p.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, skipinitialspace=True)  # so that `a, "b"` reads b as quoted
            header = next(reader, None)
            if header is None or not any(h.strip() for h in header):
                raise ProblemError(f"{where}: empty file (need a header row and at least {min_rows} data rows)")
            names = _check_column_names(header, where)
            rows, lines = _read_rows(reader, where, len(names))
    except UnicodeDecodeError as e:
        raise ProblemError(f"{where}: not UTF-8 text: {e}") from None
    except csv.Error as e:
        raise ProblemError(f"{where}: malformed CSV: {e}") from None
    target = names[-1] if target is None else target
    if target not in names:
        raise ProblemError(f"{where}: no target column {target!r}; columns are {list(names)}")
    if len(rows) < min_rows:
        raise ProblemError(f"{where}: {len(rows)} data row(s); need at least {min_rows}")
    columns = {n: _numeric_column([r[k] for r in rows], where, lines, n) for k, n in enumerate(names)}
    features = tuple(n for n in names if n != target)
    X = np.column_stack([columns[n] for n in features])
    y = columns[target]
    X.setflags(write=False)
    y.setflags(write=False)
    return DataTable(where, features, target, X, y)


@functools.lru_cache(maxsize=8)
def _read_csv_cached(path: str, target: str | None, stamp: tuple[int, int]) -> DataTable:
    """``read_csv_table`` once per file version (``stamp`` = mtime, size): a benchmark rebuilds
    the problem of every task from its mapping."""
    del stamp  # part of the cache key only
    return read_csv_table(path, target)


def _read_csv(path: Path, target: str | None) -> DataTable:
    try:
        st = path.stat()
    except OSError:
        raise ProblemError(f"data file not found: {path}") from None
    return _read_csv_cached(str(path), target, (st.st_mtime_ns, st.st_size))


def csv_kind(path: str | Path) -> str:
    """``"feynman"``, ``"dso"`` or ``"data"``: what a ``.csv`` holds, from its header row."""
    p = Path(path)
    if not p.is_file():
        raise ProblemError(f"CSV file not found: {p}")
    try:
        with p.open(encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh, skipinitialspace=True), None) or []
    except (UnicodeDecodeError, csv.Error) as e:
        raise ProblemError(f"{p}: cannot read the header row: {e}") from None
    cols = {h.strip() for h in header}
    if _FEYNMAN_COLUMNS <= cols:
        return "feynman"
    if _DSO_COLUMNS <= cols:
        return "dso"
    return "data"


@dataclass(frozen=True, eq=False)
class DataProblem(_OperatorChoice):
    """A benchmark problem given by fixed rows (a user CSV) instead of a formula: no ground
    truth, so recovery does not apply; R² on held-out rows does.

    For each benchmark seed the rows are split once (:meth:`bench_data`): a seeded permutation
    puts ``round(test_fraction·n)`` rows (at least 1, leaving at least 1) into the held-out set
    and the rest, capped at ``n_points``, into the fit set. ``operators`` (``None``: the bench
    default) as for :class:`Problem`.
    """

    name: str
    table: DataTable = field(repr=False)
    n_points: int = DEFAULT_CSV_POINTS
    test_fraction: float = DEFAULT_TEST_FRACTION
    seed: int | None = None
    operators: OperatorSet | None = None
    source: str = field(default="", compare=False)

    # A fixed-data problem has no formula; code that reports the truth checks ``has_truth``.
    has_truth: ClassVar[bool] = False
    formula: ClassVar[None] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ProblemError(
                f"problem name {self.name!r} (from {self.table.path}): use letters, digits, '_', '.', '-' "
                f"(rename the file, or give a name in a problem file)"
            )
        CsvOptions(self.table.target, self.n_points, self.test_fraction)  # validates both numbers

    # -- structure --
    @property
    def variable_names(self) -> list[str]:
        return list(self.table.feature_names)

    @property
    def nfeatures(self) -> int:
        return len(self.table.feature_names)

    @property
    def data_path(self) -> str:
        return self.table.path

    @property
    def target(self) -> str:
        return self.table.target

    def truth(self) -> Expr:
        raise ProblemError(f"problem {self.name!r} is fixed data ({self.table.path}) and has no ground truth")

    def data_rng(self, run_seed: int) -> np.random.Generator:
        """The generator of one benchmark seed's split (as :meth:`Problem.data_rng`)."""
        return _data_rng(self.seed, self.name, run_seed)

    # -- the split --
    def split(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(X, y, X_test, y_test)``: disjoint fit and held-out rows (file order kept within
        each), the fit rows a random subset of at most ``n_points``."""
        n = len(self.table.y)
        n_test = min(max(1, round(self.test_fraction * n)), n - 1)
        perm = rng.permutation(n)
        test_idx = np.sort(perm[:n_test])
        fit_idx = np.sort(perm[n_test:][: self.n_points])
        X, y = self.table.X, self.table.y
        return X[fit_idx], y[fit_idx], X[test_idx], y[test_idx]

    def bench_data(self, run_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The data of one benchmark seed, shared by every engine: ``split(data_rng(seed))``."""
        return self.split(self.data_rng(run_seed))

    def sample(self, rng: np.random.Generator, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The fit rows of the split drawn with ``rng`` (at most ``n`` of them)."""
        X, y, _, _ = self.split(rng)
        return (X, y) if n is None else (X[:n], y[:n])

    def sample_test(self, rng: np.random.Generator, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The held-out rows of the split drawn with ``rng`` (pass a generator in the same state
        as for :meth:`sample` to get the matching rows)."""
        _, _, X, y = self.split(rng)
        return (X, y) if n is None else (X[:n], y[:n])



# Every kind of benchmark problem (the runner, suites and reports take either).
BenchProblem = Problem | DataProblem


def load_csv_problem(
    path: str | Path, options: CsvOptions | None = None, *, name: str | None = None, seed: int | None = None,
    operators: OperatorSet | None = None,
) -> DataProblem:
    """A plain CSV as a :class:`DataProblem` named after the file stem (or ``name``);
    ``options`` default ``CsvOptions()``."""
    options = options if options is not None else CsvOptions()
    p = Path(path).resolve()
    table = _read_csv(p, options.target)
    return DataProblem(
        name=name if name is not None else p.stem, table=table, n_points=options.n_points,
        test_fraction=options.test_fraction, seed=seed, operators=operators, source=str(p),
    )


_DATA_PROBLEM_KEYS = {"name", "data", "target", "n_points", "test_fraction", "seed", "operators", "description"}


def _data_problem_from_mapping(
    m: Mapping, where: str, default_operators: OperatorSet | None, base_dir: Path | None
) -> DataProblem:
    """A problem-file entry ``{data: FILE.csv, target: COL, ...}`` (relative paths are taken
    from ``base_dir``, the problem file's folder)."""
    unknown = sorted(set(m) - _DATA_PROBLEM_KEYS)
    if unknown:
        hint = " (a problem has either a formula or data, not both)" if "formula" in unknown else ""
        raise ProblemError(f"{where}: unknown key(s) {unknown}{hint}; known keys: {sorted(_DATA_PROBLEM_KEYS)}")
    if not isinstance(m["data"], str) or not m["data"].strip():
        raise ProblemError(f"{where}: data must be a path to a CSV file, got {m['data']!r}")
    target = m.get("target")
    if target is not None and not isinstance(target, str):
        raise ProblemError(f"{where}: target must be a column name, got {target!r}")
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        raise ProblemError(f"{where}: name must be a string, got {name!r}")
    fraction = m.get("test_fraction", DEFAULT_TEST_FRACTION)
    path = Path(m["data"])
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        options = CsvOptions(
            target=target, n_points=_int_field(m, "n_points", where, minimum=1) or DEFAULT_CSV_POINTS,
            test_fraction=_number(fraction, where, "test_fraction"),
        )
        return load_csv_problem(
            path, options, name=name, seed=_int_field(m, "seed", where, minimum=0),
            operators=_parse_operators(m.get("operators"), where) or default_operators,
        )
    except ProblemError as e:
        msg = str(e)
        raise ProblemError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _data_problem_to_mapping(p: DataProblem) -> dict[str, Any]:
    m: dict[str, Any] = {"name": p.name, "data": p.data_path, "target": p.target, "n_points": p.n_points}
    if p.test_fraction != DEFAULT_TEST_FRACTION:
        m["test_fraction"] = p.test_fraction
    if p.seed is not None:
        m["seed"] = p.seed
    if p.operators is not None:
        b, u = p.operators.names()
        m["operators"] = {"binary": list(b), "unary": list(u)}
    return m
