"""Benchmark problems: a ground-truth formula, its variables' sampling ranges, and readers for
the problem-file YAML format, the AI Feynman CSV and the DSO benchmark CSVs.

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

Unknown keys, wrong types, bad ranges and unparsable formulas raise :class:`ProblemError`
naming the file, the problem and the key.
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
from typing import Any, Mapping, Sequence

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


# ---- the problem ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
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
        base = self.seed if self.seed is not None else zlib.crc32(self.name.encode())
        return np.random.default_rng([int(base), int(run_seed)])

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

    # -- variants --
    def with_operators(self, operators: OperatorSet | None) -> "Problem":
        return replace(self, operators=operators)

    def operator_set(self, default: OperatorSet | None = None) -> OperatorSet:
        """The problem's operators, else ``default``, else :data:`DEFAULT_OPERATORS`."""
        if self.operators is not None:
            return self.operators
        if default is not None:
            return default
        return OperatorSet.from_names(*DEFAULT_OPERATORS)


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
    m: Any, *, source: str = "", index: int | None = None, default_operators: OperatorSet | None = None
) -> Problem:
    """One problem of the problem-file format (strictly validated; the formula is parsed)."""
    where = _where(source, index, None)
    if not isinstance(m, Mapping):
        raise ProblemError(f"{where}: expected a mapping, got {type(m).__name__}")
    name = m.get("name")
    where = _where(source, index, name if isinstance(name, str) else None)
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


def problems_from_mapping(data: Any, *, source: str = "") -> tuple[Problem, ...]:
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
        problem_from_mapping(m, source=source, index=i, default_operators=default_ops) for i, m in enumerate(items)
    )
    _check_unique(problems, where)
    return problems


def _check_unique(problems: Sequence[Problem], where: str) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.name in seen:
            raise ProblemError(f"{where}: duplicate problem name {p.name!r}")
        seen.add(p.name)


def load_problem_file(path: str | Path) -> tuple[Problem, ...]:
    """Read a problem file (YAML, see the module docstring)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ProblemError(f"problem file not found: {p}")
    try:
        with p.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        raise ProblemError(f"{p}: not valid YAML: {e}") from None
    return problems_from_mapping(data, source=str(p))


def _variable_to_yaml(v: VariableSpec) -> Any:
    return [v.low, v.high] if v.step is None else {"E": [v.low, v.high, v.step]}


def problem_to_mapping(p: Problem) -> dict[str, Any]:
    """The problem in the problem-file format (inverse of :func:`problem_from_mapping`)."""
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


def dump_problem_file(problems: Sequence[Problem], path: str | Path, *, description: str = "") -> Path:
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
