"""Synthetic training problems: random formulas that are valid, non-degenerate and never
duplicate a built-in test problem.

:func:`generate_problems` draws random expression trees (sizes in ``complexity``, leaves are
variables or constants) over a :class:`SyntheticConfig`'s operators, samples data for each and
keeps a formula only when

* its truth is finite on enough of the domain (the problem's sampler rejects it otherwise),
  its targets vary (std > ``min_y_std``) and stay below ``max_abs_y``;
* it uses every one of its variables (``require_all_features``) and is not a constant;
* its canonical form (:func:`canonical_form`) is new: not another generated problem's, and not
  any held-out test problem's (:func:`heldout_canonical_forms`: every built-in suite, plus the
  AI Feynman and DSO sets when the shared benchmark folder is present).

The canonical form is a SymPy string of the expanded expression over positional variables,
with float constants rounded to 4 significant digits and the variables relabelled in the order
that gives the smallest string (for up to 4 used variables), so ``2*b + a`` over ``(a, b)`` and
``x1 + 2*x2`` coincide.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ttsr_bridge.expr.operators import OperatorSet
from ttsr_bridge.expr.tree import Expr

from .problems import Problem, ProblemError, VariableSpec

__all__ = [
    "SyntheticConfig",
    "generate_problems",
    "random_tree",
    "canonical_form",
    "problem_canonical_form",
    "heldout_canonical_forms",
]

_MAX_PERMUTED_VARIABLES = 4


@dataclass(frozen=True)
class SyntheticConfig:
    """What random problems look like.

    ``complexity`` is the tree size range (PySR's default complexity: number of nodes);
    ``variable_ranges`` the candidate sampling ranges, one drawn per variable;
    constants are drawn uniformly in ``constant_range`` and rounded to ``constant_decimals``.
    """

    binary_operators: tuple[str, ...] = ("+", "-", "*", "/")
    unary_operators: tuple[str, ...] = ("sin", "cos", "exp", "log", "sqrt")
    nfeatures: tuple[int, int] = (1, 3)
    complexity: tuple[int, int] = (3, 15)
    constant_probability: float = 0.2
    constant_range: tuple[float, float] = (-3.0, 3.0)
    constant_decimals: int = 2
    variable_ranges: tuple[tuple[float, float], ...] = ((-3.0, 3.0), (0.1, 5.0))
    n_points: int = 100
    test_points: int = 500
    min_y_std: float = 1e-3
    max_abs_y: float = 1e6
    require_all_features: bool = True
    name_prefix: str = "synthetic"
    # Give each problem its own search operator set: all binary operators, the unary operators
    # its formula uses, and each other unary operator with probability 1/2. A proposer trained
    # on such problems sees many operator sets in its context, as users' searches have.
    operator_subsets: bool = True
    max_attempts_per_problem: int = 200

    def __post_init__(self) -> None:
        lo, hi = self.nfeatures
        if not 1 <= lo <= hi:
            raise ValueError(f"nfeatures range must satisfy 1 <= low <= high, got {self.nfeatures}")
        clo, chi = self.complexity
        if not 1 <= clo <= chi:
            raise ValueError(f"complexity range must satisfy 1 <= low <= high, got {self.complexity}")
        if not 0.0 <= self.constant_probability < 1.0:
            raise ValueError("constant_probability must be in [0, 1)")
        if not self.binary_operators and not self.unary_operators and chi > 1:
            raise ValueError("no operators: only single leaves could be generated")
        if not self.variable_ranges or any(not a < b for a, b in self.variable_ranges):
            raise ValueError(f"variable_ranges must be non-empty [low, high] pairs, got {self.variable_ranges}")
        if self.constant_range[0] > self.constant_range[1]:
            raise ValueError("constant_range must be [low, high]")
        OperatorSet.from_names(self.binary_operators, self.unary_operators)  # validates names

    @property
    def operator_set(self) -> OperatorSet:
        return OperatorSet.from_names(self.binary_operators, self.unary_operators)


# ---- random trees ------------------------------------------------------------------------------
def random_tree(size: int, nfeatures: int, config: SyntheticConfig, rng: np.random.Generator) -> Expr:
    """A random tree of exactly ``size`` nodes (one less when only binary operators exist and
    ``size`` is even, since such trees have odd sizes)."""
    ops = config.operator_set
    if not ops.unary and size % 2 == 0:
        size -= 1
    if not ops.binary:
        size = max(size, 1)
    codes: list[int] = []
    vals: list[float] = []
    _grow(size, nfeatures, ops, config, rng, codes, vals)
    return Expr(codes, vals)


def _grow(size: int, nfeatures: int, ops: OperatorSet, config: SyntheticConfig,
          rng: np.random.Generator, codes: list[int], vals: list[float]) -> None:
    if size <= 1:
        _leaf(nfeatures, config, rng, codes, vals)
        return
    use_unary = bool(ops.unary) and (size == 2 or not ops.binary or rng.random() < 0.3)
    if use_unary:
        codes.append(-ops.unary[rng.integers(len(ops.unary))].id)
        vals.append(0.0)
        _grow(size - 1, nfeatures, ops, config, rng, codes, vals)
        return
    codes.append(-ops.binary[rng.integers(len(ops.binary))].id)
    vals.append(0.0)
    rest = size - 1
    if ops.unary:
        left = int(rng.integers(1, rest))  # 1 .. rest-1
    else:  # both sides must have odd sizes
        left = 2 * int(rng.integers(0, (rest - 2) // 2 + 1)) + 1
    _grow(left, nfeatures, ops, config, rng, codes, vals)
    _grow(rest - left, nfeatures, ops, config, rng, codes, vals)


def _leaf(nfeatures: int, config: SyntheticConfig, rng: np.random.Generator, codes: list[int], vals: list[float]) -> None:
    if rng.random() < config.constant_probability:
        v = round(float(rng.uniform(*config.constant_range)), config.constant_decimals)
        codes.append(0)
        vals.append(v if v != 0.0 else 1.0)
    else:
        codes.append(int(rng.integers(nfeatures)) + 1)
        vals.append(0.0)


# ---- canonical forms ---------------------------------------------------------------------------
def canonical_form(expr: Expr, nfeatures: int | None = None) -> str:
    """The SymPy-canonical string of ``expr`` (see the module docstring); equal strings mean
    the same formula up to variable renaming and constant rounding."""
    return _canonical(expr, nfeatures)[0]


def _canonical(expr: Expr, nfeatures: int | None) -> tuple[str, int]:
    """Canonical string and the number of variables the normalised formula still uses."""
    import sympy

    from ttsr_bridge.expr.sympy_bridge import to_sympy

    n = nfeatures if nfeatures is not None else max([c for c in expr.codes if c > 0], default=0)
    names = [f"v{i + 1}" for i in range(max(n, 1))]
    sym = to_sympy(expr, names)
    sym = _round_floats(sym)
    try:
        sym = sympy.expand(sym)
    except Exception:  # expansion is a normalisation only; an unexpandable form stays as is
        pass
    sym = _round_floats(sym)
    used = sorted((s for s in sym.free_symbols), key=lambda s: names.index(s.name) if s.name in names else 0)
    targets = [sympy.Symbol(f"x{i + 1}") for i in range(len(used))]
    if len(used) <= _MAX_PERMUTED_VARIABLES:
        perms: Iterable[Sequence[sympy.Symbol]] = itertools.permutations(targets)
    else:
        perms = [targets]
    return min(sympy.sstr(sym.xreplace(dict(zip(used, perm)))) for perm in perms), len(used)


def _round_floats(sym):
    import sympy

    repl = {}
    for f in sym.atoms(sympy.Float):
        v = float(f)
        if not math.isfinite(v):
            continue
        if v == round(v) and abs(v) < 1e6:
            repl[f] = sympy.Integer(int(round(v)))
        else:
            repl[f] = sympy.Float(float(f"{v:.4g}"), 4)
    return sym.xreplace(repl) if repl else sym


def problem_canonical_form(problem: Problem) -> str:
    return canonical_form(problem.truth(), problem.nfeatures)


@functools.lru_cache(maxsize=1)
def heldout_canonical_forms() -> frozenset[str]:
    """Canonical forms of every held-out test problem (built-in suites; AI Feynman and DSO
    when the shared benchmark folder exists). Training problems must avoid all of them."""
    from .suites import get_suite, heldout_suite_names

    forms: set[str] = set()
    for suite in heldout_suite_names():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # DSO rows we cannot parse are not held out
                problems = get_suite(suite)
        except ProblemError:
            continue  # the shared folder is absent: only the built-in suites are held out
        for p in problems:
            try:
                forms.add(problem_canonical_form(p))
            except Exception as e:  # one odd formula must not disable the guard for the rest
                warnings.warn(f"held-out problem {p.name!r}: no canonical form ({e})", stacklevel=2)
    return frozenset(forms)


# ---- problem generation ------------------------------------------------------------------------
def generate_problems(
    n: int,
    config: SyntheticConfig,
    rng: np.random.Generator,
    *,
    exclude: Iterable[str] | None = None,
) -> list[Problem]:
    """``n`` random problems (see the module docstring). ``exclude``: extra canonical forms to
    avoid (default: :func:`heldout_canonical_forms`; pass ``()`` to avoid nothing extra —
    the held-out forms are always avoided). Raises ``ProblemError`` when the configuration
    cannot yield ``n`` distinct problems within the attempt budget."""
    from ttsr_bridge.expr.printer import to_infix

    seen = set(heldout_canonical_forms()) | set(exclude or ())
    out: list[Problem] = []
    attempts = 0
    budget = max(n, 1) * config.max_attempts_per_problem
    while len(out) < n:
        if attempts >= budget:
            raise ProblemError(
                f"generated only {len(out)}/{n} distinct non-degenerate problems in {attempts} attempts; "
                "widen the complexity/nfeatures ranges or the operator set"
            )
        attempts += 1
        nfeat = int(rng.integers(config.nfeatures[0], config.nfeatures[1] + 1))
        size = int(rng.integers(config.complexity[0], config.complexity[1] + 1))
        tree = random_tree(size, nfeat, config, rng)
        if config.require_all_features and len(tree.features_used()) != nfeat:
            continue
        names = [f"x{i + 1}" for i in range(nfeat)]
        variables = tuple(
            VariableSpec(nm, *config.variable_ranges[int(rng.integers(len(config.variable_ranges)))]) for nm in names
        )
        problem = Problem(
            name=f"{config.name_prefix}{len(out):05d}", formula=to_infix(tree, names), variables=variables,
            n_points=config.n_points, seed=int(rng.integers(2**31)), operators=_search_operators(tree, config, rng),
            test_points=config.test_points, source="synthetic",
        )
        form = _accept(problem, config, rng, seen)
        if form is None:
            continue
        seen.add(form)
        out.append(problem)
    return out


def _search_operators(tree, config: SyntheticConfig, rng: np.random.Generator) -> OperatorSet:
    """The operator set a search of this problem uses (see ``operator_subsets``)."""
    if not config.operator_subsets:
        return config.operator_set
    used = {o.name for o in tree.operators_used()}
    unary = tuple(u for u in config.unary_operators if u in used or rng.random() < 0.5)
    return OperatorSet.from_names(config.binary_operators, unary)


def _accept(problem: Problem, config: SyntheticConfig, rng: np.random.Generator, seen: set[str]) -> str | None:
    """The problem's canonical form when it is valid, non-degenerate and new; else None."""
    try:
        _, y = problem.sample(rng)
    except ProblemError:
        return None  # finite on too little of the domain
    if not np.all(np.isfinite(y)) or np.max(np.abs(y)) > config.max_abs_y or np.std(y) <= config.min_y_std:
        return None
    try:
        form, nused = _canonical(problem.truth(), problem.nfeatures)
    except Exception:  # SymPy could not handle the formula: skip it rather than risk a duplicate
        return None
    if form in seen or nused == 0:
        return None
    if config.require_all_features and nused != problem.nfeatures:
        return None  # normalisation removed a variable (x1 - x1 + x2)
    return form
